//! Access control for the native protocol: a pre-shared key (`--key-file`), a Noise handshake
//! that proves both peers hold it, and encrypted, authenticated records for everything after
//! the hello. The cryptography is the `snow` crate's (Noise `NNpsk0_25519_ChaChaPoly_BLAKE2s`);
//! this module only frames its messages on the socket and carries the plaintext message
//! stream through them, so [`MessageReader`] and [`MessageWriter`] work unchanged on top.
//!
//! ```text
//! Hello (plaintext, flag 0x01 "key required") ⇄ Hello
//! sender → receiver: u16 len, Noise message 1 (-> psk, e)         48 bytes
//! receiver → sender: u16 len, Noise message 2 (<- e, ee)           48 bytes
//!                    (or u16 0: "refused, the keys differ")
//! then each direction: u16 len, ciphertext (≤ 65535 bytes, 16 of them the tag), ...
//! ```
//!
//! The sender is always the Noise initiator, whichever end connected. The prologue binds both
//! hellos, so a hello altered on the way fails the handshake. `docs/protocol.md` has the byte
//! layout.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;
use tracing::{info, warn};

use super::io::is_timeout;
use super::proto::{Hello, Role};
use super::{MessageReader, MessageWriter};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
/// The environment variable that names a key file when `--key-file` is not given.
pub const KEY_ENV: &str = "FRAMECAST_KEY_FILE";
/// The Noise protocol of the handshake and the records.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Largest record body (ciphertext and tag) after its 2-byte length: Noise's message limit.
pub const MAX_RECORD: usize = 65535;
/// Bytes of authentication tag in each record.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one record carries.
pub const MAX_RECORD_PAYLOAD: usize = MAX_RECORD - TAG_LEN;
/// Largest key file read (a key file is 64 hex digits and perhaps a newline).
const MAX_KEY_FILE: u64 = 1024;
/// Mixed into the Noise prologue ahead of the two hellos.
const PROLOGUE_LABEL: &[u8] = b"framecast secure v1";
/// The label the HTTP token is a keyed hash of.
const HTTP_TOKEN_LABEL: &[u8] = b"framecast http token v1";

/// A 32-byte pre-shared key. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error(
        "key file {}: expected 64 hex digits (a 32-byte key, as `framecast keygen` writes), found {found}",
        path.display()
    )]
    Format { path: PathBuf, found: String },
    #[error("cannot write the key file {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot get random bytes for a key: {0}")]
    Random(String),
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Key, KeyError> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Key(k))
    }

    /// Parses a key file's contents: 64 hex digits, with any whitespace around them.
    pub fn parse(text: &[u8], path: &Path) -> Result<Key, KeyError> {
        let bad = |found: String| KeyError::Format { path: path.to_path_buf(), found };
        let t = text.trim_ascii();
        if t.len() != 2 * KEY_LEN {
            let what = if t.iter().all(u8::is_ascii_hexdigit) { "hex digits" } else { "bytes" };
            return Err(bad(format!("{} {what}", t.len())));
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in t.chunks(2).enumerate() {
            let digit = |j: usize| {
                let c = pair[j];
                (c as char).to_digit(16).ok_or_else(|| {
                    let shown =
                        if c.is_ascii_graphic() { format!("{:?}", c as char) } else { format!("byte {c:#04x}") };
                    bad(format!("{shown} at character {}", 2 * i + j + 1))
                })
            };
            k[i] = (digit(0)? * 16 + digit(1)?) as u8;
        }
        Ok(Key(k))
    }

    /// Reads a key file, and warns when other users may read it.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let read_err = |error| KeyError::Read { path: path.to_path_buf(), error };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(read_err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let mut text = Vec::new();
        file.take(MAX_KEY_FILE + 1).read_to_end(&mut text).map_err(read_err)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::Format {
                path: path.to_path_buf(),
                found: format!("more than {MAX_KEY_FILE} bytes"),
            });
        }
        let key = Key::parse(&text, path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(
                    path = %path.display(),
                    mode = format!("{mode:03o}"),
                    "the key file is readable by other users; `chmod 600` it"
                );
            }
        }
        Ok(key)
    }

    /// Writes a new random key to `path` (which must not exist yet), readable by its owner only.
    pub fn write_new(path: &Path) -> Result<Key, KeyError> {
        let key = Key::generate()?;
        let write_err = |error| KeyError::Write { path: path.to_path_buf(), error };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(write_err)?;
        f.write_all(format!("{}\n", key.to_hex()).as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        Ok(key)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The HTTP access token: BLAKE2s-256 keyed with the key over a fixed label, in hex. It
    /// can be shown and sent over plain HTTP without revealing the key itself.
    pub fn http_token(&self) -> String {
        use blake2::digest::{FixedOutput, KeyInit, Update};
        let mut mac = blake2::Blake2sMac256::new_from_slice(&self.0).expect("a 32-byte key fits BLAKE2s");
        mac.update(HTTP_TOKEN_LABEL);
        hex(&mac.finalize_fixed())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of a presented token with the expected one.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// How the peers call each other in log lines.
fn name(role: Role) -> &'static str {
    match role {
        Role::Sender => "sender",
        Role::Receiver => "viewer",
    }
}

fn opposite(role: Role) -> Role {
    match role {
        Role::Sender => Role::Receiver,
        Role::Receiver => Role::Sender,
    }
}

/// Why the secure handshake (or the key check before it) failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the {} has no key but this {} requires one: give both ends the same --key-file", name(*peer), name(opposite(*peer)))]
    PeerHasNoKey { peer: Role },
    #[error("the {} requires a key but this {} has none: give both ends the same --key-file (or {KEY_ENV})", name(*peer), name(opposite(*peer)))]
    WeHaveNoKey { peer: Role },
    #[error("the {}'s key differs from ours: its handshake message failed authentication; refused", name(*peer))]
    KeyMismatch { peer: Role },
    #[error("the {} refused the secure handshake: its key differs from ours", name(*peer))]
    Refused { peer: Role },
    #[error("the {} closed the connection during the secure handshake", name(*peer))]
    Closed { peer: Role },
    #[error("no secure handshake from the peer within {0:?}")]
    Timeout(Duration),
    #[error("secure handshake message of {len} bytes, expected {expected}")]
    BadLength { len: usize, expected: usize },
    #[error("secure handshake: {0}")]
    Noise(snow::Error),
    #[error("secure handshake: {0}")]
    Io(io::Error),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// The read half of a connection: the socket itself, or records decrypted from it.
pub enum LinkRead {
    Plain(TcpStream),
    Secure(Box<SecureReader<TcpStream>>),
}

/// The write half of a connection: the socket itself, or records encrypted onto it.
pub enum LinkWrite {
    Plain(TcpStream),
    Secure(Box<SecureWriter<TcpStream>>),
}

impl LinkRead {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            LinkRead::Plain(s) => s,
            LinkRead::Secure(s) => &s.input.inner,
        }
    }
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }
    pub fn is_secure(&self) -> bool {
        matches!(self, LinkRead::Secure(_))
    }
}

impl LinkWrite {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            LinkWrite::Plain(s) => s,
            LinkWrite::Secure(s) => &s.inner,
        }
    }
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }
}

impl Read for LinkRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkRead::Plain(s) => s.read(buf),
            LinkRead::Secure(s) => s.read(buf),
        }
    }
}

impl Write for LinkWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkWrite::Plain(s) => s.write(buf),
            LinkWrite::Secure(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            LinkWrite::Plain(s) => s.write_vectored(bufs),
            LinkWrite::Secure(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkWrite::Plain(s) => s.flush(),
            LinkWrite::Secure(s) => s.flush(),
        }
    }
}

/// The message reader and writer of a connection, after [`upgrade`].
pub type Halves = (MessageReader<LinkRead>, MessageWriter<LinkWrite>);

/// Runs after both hellos: checks that both peers agree on whether a key is required, runs
/// the Noise handshake when it is, and returns the halves the messages go through.
///
/// `ours` and `theirs` are the hellos as sent and received; bytes the reader had already
/// buffered past the hello are kept. The handshake must finish within `timeout`.
pub fn upgrade(
    reader: MessageReader<TcpStream>,
    writer: MessageWriter<TcpStream>,
    ours: &Hello,
    theirs: &Hello,
    key: Option<&Key>,
    timeout: Duration,
) -> Result<Halves, HandshakeError> {
    let peer = theirs.role;
    let key = match (key, theirs.keyed) {
        (None, false) => return Ok((reader.map_inner(LinkRead::Plain), writer.map_inner(LinkWrite::Plain))),
        (Some(_), false) => return Err(HandshakeError::PeerHasNoKey { peer }),
        (None, true) => return Err(HandshakeError::WeHaveNoKey { peer }),
        (Some(k), true) => k,
    };
    let mut reader = reader;
    let leftover = reader.take_buffered();
    let mut reader = reader.map_inner(|tcp| RecordInput::new(tcp, &leftover));
    let mut writer = writer;
    let prologue = prologue(ours, theirs);
    let deadline = Instant::now() + timeout;
    let state = handshake(ours.role, key, &prologue, reader.get_mut(), writer.get_mut(), deadline, timeout)?;
    info!("the {} proved it holds the key; messages are encrypted and authenticated ({NOISE_PARAMS})", name(peer));
    let state = Arc::new(state);
    let reader = reader.map_inner(|input| LinkRead::Secure(Box::new(SecureReader::new(input, state.clone()))));
    let writer = writer.map_inner(|tcp| LinkWrite::Secure(Box::new(SecureWriter::new(tcp, state))));
    Ok((reader, writer))
}

/// The Noise prologue: the label, then the sender's hello as sent, then the receiver's
/// (`ours` and `theirs` in either order). Also the start of the UDP transport's prologue.
pub(crate) fn prologue(ours: &Hello, theirs: &Hello) -> Vec<u8> {
    let (sender_hello, receiver_hello) = if ours.role == Role::Sender { (ours, theirs) } else { (theirs, ours) };
    let mut prologue = PROLOGUE_LABEL.to_vec();
    sender_hello.encode(&mut prologue);
    receiver_hello.encode(&mut prologue);
    prologue
}

/// A Noise builder for [`NOISE_PARAMS`] with the key as psk0 and `prologue`.
pub(crate) fn noise_builder<'a>(key: &'a Key, prologue: &'a [u8]) -> Result<snow::Builder<'a>, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    snow::Builder::new(params).psk(0, &key.0)?.prologue(prologue)
}

/// Both handshake messages are an ephemeral public key and a tag over an empty payload.
pub(crate) const HANDSHAKE_LEN: usize = 32 + TAG_LEN;

/// One handshake message each way, each behind a 2-byte length.
fn handshake<R: Read, W: Write>(
    role: Role,
    key: &Key,
    prologue: &[u8],
    input: &mut RecordInput<R>,
    out: &mut W,
    deadline: Instant,
    timeout: Duration,
) -> Result<StatelessTransportState, HandshakeError> {
    let builder = noise_builder(key, prologue);
    let peer = opposite(role);
    let mut msg = [0u8; 256];
    let mut payload = [0u8; 256];
    let next = |input: &mut RecordInput<R>| next_handshake_record(input, peer, deadline, timeout);
    let state = match role {
        Role::Sender => {
            let mut hs = builder.and_then(|b| b.build_initiator()).map_err(HandshakeError::Noise)?;
            let n = hs.write_message(&[], &mut msg).map_err(HandshakeError::Noise)?;
            send_handshake_record(out, &msg[..n])?;
            let r = next(input)?;
            if r.is_empty() {
                return Err(HandshakeError::Refused { peer });
            }
            check_handshake_len(&r)?;
            hs.read_message(&input.buf[r], &mut payload).map_err(|_| HandshakeError::KeyMismatch { peer })?;
            hs
        }
        Role::Receiver => {
            let mut hs = builder.and_then(|b| b.build_responder()).map_err(HandshakeError::Noise)?;
            let r = next(input)?;
            check_handshake_len(&r)?;
            if hs.read_message(&input.buf[r], &mut payload).is_err() {
                // Tell the sender why, so that it logs the reason rather than a closed socket.
                let _ = send_handshake_record(out, &[]);
                return Err(HandshakeError::KeyMismatch { peer });
            }
            let n = hs.write_message(&[], &mut msg).map_err(HandshakeError::Noise)?;
            send_handshake_record(out, &msg[..n])?;
            hs
        }
    };
    state.into_stateless_transport_mode().map_err(HandshakeError::Noise)
}

/// The next handshake record from `peer`, waiting through read timeouts until `deadline`
/// (`timeout` is what the error reports). An end of stream is [`HandshakeError::Closed`].
fn next_handshake_record<R: Read>(
    input: &mut RecordInput<R>,
    peer: Role,
    deadline: Instant,
    timeout: Duration,
) -> Result<Range<usize>, HandshakeError> {
    loop {
        match input.next_record(0) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => return Err(HandshakeError::Closed { peer }),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Err(HandshakeError::Timeout(timeout));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(HandshakeError::Closed { peer }),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes `body` behind its 2-byte big-endian length, in one write, and flushes.
fn send_handshake_record<W: Write>(out: &mut W, body: &[u8]) -> io::Result<()> {
    let mut rec = Vec::with_capacity(2 + body.len());
    rec.extend_from_slice(&(body.len() as u16).to_be_bytes());
    rec.extend_from_slice(body);
    out.write_all(&rec)?;
    out.flush()
}

/// Checks that a handshake record is exactly [`HANDSHAKE_LEN`] bytes long.
fn check_handshake_len(r: &Range<usize>) -> Result<(), HandshakeError> {
    if r.len() != HANDSHAKE_LEN {
        return Err(HandshakeError::BadLength { len: r.len(), expected: HANDSHAKE_LEN });
    }
    Ok(())
}

/// Reads length-prefixed records from a byte stream into one fixed buffer. A read timeout
/// of the stream is passed up with the partial record kept, so reading resumes where it was.
pub struct RecordInput<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R: Read> RecordInput<R> {
    /// `leftover`: bytes already read from `inner` (at most one record's worth and a bit).
    pub fn new(inner: R, leftover: &[u8]) -> Self {
        let cap = (2 * (2 + MAX_RECORD)).max(leftover.len());
        let mut buf = vec![0u8; cap].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        RecordInput { inner, buf, start: 0, end: leftover.len() }
    }

    /// The next record's body (a range of `self.buf`). `Ok(None)` is a clean end of stream
    /// between records. A body shorter than `min_len` is an error.
    pub fn next_record(&mut self, min_len: usize) -> io::Result<Option<Range<usize>>> {
        loop {
            let have = self.end - self.start;
            let mut need = 2;
            if have >= 2 {
                let len = u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
                if len < min_len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("encrypted record of {len} bytes, shorter than its {TAG_LEN}-byte tag"),
                    ));
                }
                if have >= 2 + len {
                    let body = self.start + 2..self.start + 2 + len;
                    self.start += 2 + len;
                    return Ok(Some(body));
                }
                need = 2 + len;
            }
            // Make room for the whole record: move its start to the front when it would not
            // fit (the buffer holds two records of the largest size, so this is rare).
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.start + need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = match self.inner.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                if self.end == self.start {
                    return Ok(None);
                }
                let have = self.end - self.start;
                let what = if have < 2 {
                    "in a record's length".to_string()
                } else {
                    let len = u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]);
                    format!("inside an encrypted record ({} of its {len} bytes received)", have - 2)
                };
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed {what}")));
            }
            self.end += n;
        }
    }
}

/// Decrypts records into the plaintext byte stream.
pub struct SecureReader<R> {
    input: RecordInput<R>,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Box<[u8]>,
    plain_start: usize,
    plain_end: usize,
}

impl<R: Read> SecureReader<R> {
    pub fn new(input: RecordInput<R>, state: Arc<StatelessTransportState>) -> Self {
        SecureReader {
            input,
            state,
            nonce: 0,
            plain: vec![0u8; MAX_RECORD_PAYLOAD].into(),
            plain_start: 0,
            plain_end: 0,
        }
    }
}

impl<R: Read> Read for SecureReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.plain_start < self.plain_end {
                let n = buf.len().min(self.plain_end - self.plain_start);
                buf[..n].copy_from_slice(&self.plain[self.plain_start..self.plain_start + n]);
                self.plain_start += n;
                return Ok(n);
            }
            let Some(r) = self.input.next_record(TAG_LEN)? else { return Ok(0) };
            if self.nonce == u64::MAX {
                return Err(io::Error::other("encrypted stream exhausted its 2^64 records"));
            }
            let record = self.nonce;
            let cipher = &self.input.buf[r];
            let size = cipher.len() - TAG_LEN;
            // Straight into the caller's buffer when it has room, else through ours.
            let res = if buf.len() >= size {
                self.state.read_message(self.nonce, cipher, buf)
            } else {
                self.state.read_message(self.nonce, cipher, &mut self.plain).inspect(|&n| {
                    (self.plain_start, self.plain_end) = (0, n);
                })
            };
            self.nonce += 1;
            match res {
                Ok(n) if buf.len() >= size && n > 0 => return Ok(n),
                Ok(_) => {} // buffered, or an empty record
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "encrypted record {record} failed authentication: it was altered on the way or \
                             did not come from the peer that did the handshake"
                        ),
                    ))
                }
            }
        }
    }
}

/// Encrypts the plaintext byte stream into records: bytes gather until a record is full or
/// the stream is flushed (the message writer flushes once per message).
pub struct SecureWriter<W: Write> {
    inner: W,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Vec<u8>,
    record: Box<[u8]>,
    /// A record was cut short by a write error: the stream cannot continue.
    broken: bool,
}

impl<W: Write> SecureWriter<W> {
    pub fn new(inner: W, state: Arc<StatelessTransportState>) -> Self {
        SecureWriter {
            inner,
            state,
            nonce: 0,
            plain: Vec::with_capacity(MAX_RECORD_PAYLOAD),
            record: vec![0u8; 2 + MAX_RECORD].into(),
            broken: false,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Encrypts `payload` (at most `MAX_RECORD_PAYLOAD` bytes) as one record and writes it.
    fn seal(&mut self, payload: Option<&[u8]>) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "encrypted stream broken by an earlier write error"));
        }
        if self.nonce == u64::MAX {
            return Err(io::Error::other("encrypted stream exhausted its 2^64 records"));
        }
        let payload = payload.unwrap_or(&self.plain);
        let n = self.state.write_message(self.nonce, payload, &mut self.record[2..]).map_err(io::Error::other)?;
        self.nonce += 1;
        self.record[..2].copy_from_slice(&(n as u16).to_be_bytes());
        if let Err(e) = self.inner.write_all(&self.record[..2 + n]) {
            self.broken = true;
            return Err(e);
        }
        self.plain.clear();
        Ok(())
    }
}

impl<W: Write> Write for SecureWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.plain.is_empty() && buf.len() >= MAX_RECORD_PAYLOAD {
            // A full record straight from the caller's bytes, without a copy.
            self.seal(Some(&buf[..MAX_RECORD_PAYLOAD]))?;
            return Ok(MAX_RECORD_PAYLOAD);
        }
        let n = buf.len().min(MAX_RECORD_PAYLOAD - self.plain.len());
        self.plain.extend_from_slice(&buf[..n]);
        if self.plain.len() == MAX_RECORD_PAYLOAD {
            self.seal(None)?;
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // Gather small slices (a message header ahead of a JPEG) into the same record.
        let mut total = 0;
        for b in bufs {
            let mut rest: &[u8] = b;
            while !rest.is_empty() {
                let n = self.write(rest)?;
                total += n;
                rest = &rest[n..];
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.plain.is_empty() {
            self.seal(None)?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const KEY: Key = Key([7; KEY_LEN]);

    /// Two transport states that completed a handshake with `key` (sender, receiver).
    fn pair() -> (Arc<StatelessTransportState>, Arc<StatelessTransportState>) {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || run_handshake(Role::Receiver, &KEY, b));
        let s = run_handshake(Role::Sender, &KEY, a).unwrap();
        let r = peer.join().unwrap().unwrap();
        (Arc::new(s), Arc::new(r))
    }

    fn run_handshake(role: Role, key: &Key, s: UnixStream) -> Result<StatelessTransportState, HandshakeError> {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut input = RecordInput::new(s.try_clone().unwrap(), &[]);
        let mut out = s;
        let timeout = Duration::from_millis(500);
        handshake(role, key, b"prologue", &mut input, &mut out, Instant::now() + timeout, timeout)
    }

    /// Hands out its bytes in the given chunk sizes (cycled), with a timeout between chunks.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        i: usize,
        stall: bool,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.stall = !self.stall;
            if self.stall {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let size = self.sizes[self.i % self.sizes.len()].max(1);
            self.i += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn chunked(data: Vec<u8>, sizes: &[usize]) -> Chunked {
        Chunked { data, at: 0, sizes: sizes.to_vec(), i: 0, stall: false }
    }

    /// Encrypts `messages` (each written whole and flushed, as the message writer does).
    fn seal_all(state: &Arc<StatelessTransportState>, messages: &[Vec<u8>]) -> Vec<u8> {
        let mut w = SecureWriter::new(Vec::new(), state.clone());
        for m in messages {
            if !m.is_empty() {
                let mut slices = [io::IoSlice::new(&m[..m.len().min(60)]), io::IoSlice::new(&m[m.len().min(60)..])];
                crate::net::io::write_all_vectored(&mut w, &mut slices).unwrap();
            }
            w.flush().unwrap();
        }
        w.inner
    }

    /// Reads everything, retrying timeouts, with reads of `read_size` bytes.
    fn open_all<R: Read>(r: &mut SecureReader<R>, read_size: usize) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The record lengths on the wire.
    fn record_lengths(wire: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut lens = Vec::new();
        while at < wire.len() {
            let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
            lens.push(len);
            at += 2 + len;
        }
        assert_eq!(at, wire.len());
        lens
    }

    fn messages() -> Vec<Vec<u8>> {
        [0usize, 1, 60, 1000, MAX_RECORD_PAYLOAD - 1, MAX_RECORD_PAYLOAD, MAX_RECORD_PAYLOAD + 1, 300_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j * 31 + i) as u8).collect())
            .collect()
    }

    #[test]
    fn records_round_trip_however_the_bytes_are_split() {
        let (s, r) = pair();
        let msgs = messages();
        let wire = seal_all(&s, &msgs);
        let want: Vec<u8> = msgs.concat();
        let lens = record_lengths(&wire);
        assert!(lens.iter().all(|&l| (TAG_LEN..=MAX_RECORD).contains(&l)), "{lens:?}");
        assert!(lens.contains(&MAX_RECORD), "big messages fill whole records: {lens:?}");
        let sample = &msgs[7][1000..1032];
        assert!(!wire.windows(sample.len()).any(|w| w == sample), "plaintext on the wire");
        for (sizes, read_size) in
            [(&[1usize][..], 7usize), (&[2, 3, 70_000][..], 100_000), (&[65_537][..], 1), (&[9999][..], 65_536)]
        {
            let mut rd = SecureReader::new(RecordInput::new(chunked(wire.clone(), sizes), &[]), r.clone());
            let got = open_all(&mut rd, read_size).unwrap();
            assert!(got == want, "chunks {sizes:?}, reads of {read_size}: {} of {} bytes", got.len(), want.len());
            assert_eq!(rd.input.buf.len(), 2 * (2 + MAX_RECORD), "the record buffer never grows");
        }
        // Bytes read ahead before the switch (after the hello) are used first.
        let mut rd = SecureReader::new(RecordInput::new(chunked(wire[1000..].to_vec(), &[4096]), &wire[..1000]), r);
        assert!(open_all(&mut rd, 4096).unwrap() == want);
    }

    #[test]
    fn each_direction_has_its_own_keys() {
        let (s, r) = pair();
        let wire = seal_all(&s, &[b"hello viewer".to_vec()]);
        // The sender cannot read its own records back: the directions use different keys.
        let mut own = SecureReader::new(RecordInput::new(&wire[..], &[]), s.clone());
        assert_eq!(open_all(&mut own, 100).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let back = seal_all(&r, &[b"hello sender".to_vec()]);
        let mut rd = SecureReader::new(RecordInput::new(&back[..], &[]), s);
        assert_eq!(open_all(&mut rd, 100).unwrap(), b"hello sender");
    }

    #[test]
    fn altered_reordered_or_replayed_records_fail_authentication() {
        let (s, r) = pair();
        let msgs = vec![b"first".to_vec(), b"second".to_vec()];
        let wire = seal_all(&s, &msgs);
        let first_len = 2 + record_lengths(&wire)[0];
        let check = |bytes: Vec<u8>, what: &str| {
            let mut rd = SecureReader::new(RecordInput::new(&bytes[..], &[]), r.clone());
            let e = open_all(&mut rd, 100).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(e.to_string().contains("failed authentication"), "{what}: {e}");
        };
        for at in [2, 5, first_len - 1, first_len + 2, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            check(bad, &format!("byte {at} flipped"));
        }
        let mut swapped = wire[first_len..].to_vec();
        swapped.extend_from_slice(&wire[..first_len]);
        check(swapped, "records swapped");
        let mut replayed = wire[..first_len].to_vec();
        replayed.extend_from_slice(&wire[..first_len]);
        check(replayed, "first record twice");
    }

    #[test]
    fn bad_lengths_and_truncation_are_errors_not_waits() {
        let (s, r) = pair();
        for len in [0u16, 1, 15] {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(0u8, len as usize));
            let mut rd = SecureReader::new(RecordInput::new(&bytes[..], &[]), r.clone());
            let e = open_all(&mut rd, 100).unwrap_err();
            assert!(
                e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("shorter than its 16-byte tag"),
                "{e}"
            );
        }
        // A record that declares the maximum and stops short: the buffer stays fixed and
        // the end is reported as a cut inside a record.
        let mut bytes = (MAX_RECORD as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xab; 100]);
        let mut rd = SecureReader::new(RecordInput::new(chunked(bytes, &[1]), &[]), r.clone());
        let e = open_all(&mut rd, 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert!(e.to_string().contains("100 of its 65535 bytes"), "{e}");
        assert_eq!(rd.input.buf.len(), 2 * (2 + MAX_RECORD));
        // A clean end between records is a plain end of stream.
        let wire = seal_all(&s, &[b"x".to_vec()]);
        let mut rd = SecureReader::new(RecordInput::new(&wire[..wire.len() - 1], &[]), r.clone());
        assert_eq!(open_all(&mut rd, 10).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut rd = SecureReader::new(RecordInput::new(&wire[..], &[]), r);
        assert_eq!(open_all(&mut rd, 10).unwrap(), b"x");
    }

    #[test]
    fn handshake_with_different_keys_is_refused_on_both_sides() {
        let (a, b) = UnixStream::pair().unwrap();
        let other = Key([8; KEY_LEN]);
        let viewer = std::thread::spawn(move || run_handshake(Role::Receiver, &other, b));
        let sender = run_handshake(Role::Sender, &KEY, a);
        assert!(matches!(sender, Err(HandshakeError::Refused { peer: Role::Receiver })), "{sender:?}");
        let viewer = viewer.join().unwrap();
        assert!(matches!(viewer, Err(HandshakeError::KeyMismatch { peer: Role::Sender })), "{viewer:?}");
        assert_eq!(
            viewer.unwrap_err().to_string(),
            "the sender's key differs from ours: its handshake message failed authentication; refused"
        );
    }

    #[test]
    fn a_silent_or_closing_peer_ends_the_handshake() {
        let (a, b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let e = run_handshake(Role::Receiver, &KEY, a).unwrap_err();
        assert!(matches!(e, HandshakeError::Timeout(_)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(b);
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = run_handshake(Role::Sender, &KEY, a).unwrap_err();
        assert!(matches!(e, HandshakeError::Closed { .. } | HandshakeError::Io(_)), "{e:?}");
    }

    /// One end of a real TCP connection, through hellos and `upgrade`, as the pipelines do it.
    fn tcp_end(role: Role, stream: TcpStream, key: Option<Key>) -> Result<Halves, HandshakeError> {
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut writer = MessageWriter::new(stream.try_clone().unwrap());
        let mut reader = MessageReader::new(stream);
        let ours = Hello::new(role, [1; 16]).keyed(key.is_some());
        writer.write_hello(&ours).unwrap();
        let theirs = reader.read_hello(opposite(role), Duration::from_secs(5)).unwrap();
        upgrade(reader, writer, &ours, &theirs, key.as_ref(), Duration::from_secs(5))
    }

    fn connect_pair(
        sender_key: Option<Key>,
        viewer_key: Option<Key>,
    ) -> (Result<Halves, HandshakeError>, Result<Halves, HandshakeError>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let viewer = std::thread::spawn(move || tcp_end(Role::Receiver, l.accept().unwrap().0, viewer_key));
        let sender = tcp_end(Role::Sender, TcpStream::connect(addr).unwrap(), sender_key);
        (sender, viewer.join().unwrap())
    }

    #[test]
    fn message_reader_and_writer_work_unchanged_over_the_secure_layer() {
        use super::super::proto::{Ping, StreamInfo};
        use super::super::{Event, Message};
        let (sender, viewer) = connect_pair(Some(KEY), Some(KEY));
        let ((mut s_rd, mut s_wr), (mut v_rd, mut v_wr)) = (sender.unwrap(), viewer.unwrap());
        assert!(s_rd.get_ref().is_secure() && v_rd.get_ref().is_secure());
        let info = StreamInfo { width: 1280, height: 720, fps_milli: 0 };
        let jpeg: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let header = crate::testutil::sample_header(9, info, jpeg.len());
        s_wr.write_message(&Message::StreamInfo(info)).unwrap();
        s_wr.write_frame(&header, &jpeg).unwrap();
        v_wr.write_message(&Message::Ping(Ping { id: 5, t1_us: 6 })).unwrap();
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
            match v_rd.next_event().unwrap() {
                Event::Message(Message::StreamInfo(i)) => got.push(format!("{i:?}")),
                Event::Message(Message::Frame(h, j)) => {
                    assert_eq!(h, header);
                    assert!(j == &jpeg[..], "the JPEG arrives intact");
                    got.push("frame".into());
                }
                Event::Message(m) => panic!("unexpected {m:?}"),
                Event::Idle => {}
                Event::Eof => panic!("early end"),
            }
        }
        assert_eq!(got, [format!("{info:?}"), "frame".to_string()]);
        let t0 = Instant::now();
        loop {
            match s_rd.next_event().unwrap() {
                Event::Message(Message::Ping(p)) => break assert_eq!((p.id, p.t1_us), (5, 6)),
                Event::Idle if t0.elapsed() < Duration::from_secs(10) => {}
                other => panic!("expected the ping, got {other:?}"),
            }
        }
        // Error offsets still count plaintext stream bytes after the 24-byte hello.
        s_wr.get_mut().write_all(&[9]).unwrap();
        s_wr.get_mut().flush().unwrap();
        let e = loop {
            match v_rd.next_event() {
                Ok(Event::Idle) => {}
                other => break other.unwrap_err(),
            }
        };
        let offset = 24 + 8 + 12 + 8 + 52 + jpeg.len();
        assert!(e.to_string().contains(&format!("offset {offset}")), "{e}");
    }

    #[test]
    fn both_ends_say_which_one_lacks_the_key() {
        let (sender, viewer) = connect_pair(Some(KEY), None);
        let (s, v) = (sender.err().unwrap(), viewer.err().unwrap());
        assert_eq!(
            s.to_string(),
            "the viewer has no key but this sender requires one: give both ends the same --key-file"
        );
        assert_eq!(
            v.to_string(),
            "the sender requires a key but this viewer has none: give both ends the same --key-file (or \
             FRAMECAST_KEY_FILE)"
        );
        let (sender, viewer) = connect_pair(None, Some(KEY));
        assert!(matches!(sender.err().unwrap(), HandshakeError::WeHaveNoKey { peer: Role::Receiver }));
        assert!(matches!(viewer.err().unwrap(), HandshakeError::PeerHasNoKey { peer: Role::Sender }));
        let (sender, viewer) = connect_pair(None, None);
        assert!(!sender.unwrap().0.get_ref().is_secure() && !viewer.unwrap().0.get_ref().is_secure());
    }

    #[test]
    fn key_files_are_64_hex_digits() {
        let p = Path::new("k");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = Key::parse(format!("  {hex}\n").as_bytes(), p).unwrap();
        assert_eq!(k.to_hex(), hex.to_lowercase());
        let err = |text: &str| Key::parse(text.as_bytes(), p).unwrap_err().to_string();
        assert!(err("abc").contains("found 3 hex digits"), "{}", err("abc"));
        assert!(err(&hex[..62]).contains("found 62 hex digits"));
        assert!(err(&format!("{hex}00")).contains("found 66 hex digits"));
        let bad = format!("{}g{}", &hex[..10], &hex[11..]);
        assert!(err(&bad).contains("'g' at character 11"), "{}", err(&bad));
        assert!(err("").contains("expected 64 hex digits"));
        assert!(format!("{k:?}") == "Key(..)", "Debug must not show the key");
    }

    #[test]
    fn key_files_are_written_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("framecast-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        let k = Key::write_new(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Key::load(&path).unwrap(), k);
        assert!(matches!(Key::write_new(&path), Err(KeyError::Write { .. })), "an existing key is not replaced");
        assert_ne!(Key::generate().unwrap(), k);
        let missing = Key::load(&dir.join("none")).unwrap_err().to_string();
        assert!(missing.contains("cannot read the key file") && missing.contains("none"), "{missing}");
        std::fs::write(&path, vec![b'0'; 5000]).unwrap();
        assert!(Key::load(&path).unwrap_err().to_string().contains("more than 1024 bytes"));
        assert!(Key::load(&dir).unwrap_err().to_string().contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_token_is_a_keyed_hash_not_the_key() {
        let t = KEY.http_token();
        assert_eq!(t.len(), 64);
        assert_eq!(t, KEY.http_token());
        assert_ne!(t, KEY.to_hex());
        assert_ne!(t, Key([8; KEY_LEN]).http_token());
        assert!(token_matches(&t, &t) && !token_matches(&t[1..], &t) && !token_matches(&Key([8; 32]).http_token(), &t));
    }
}
