//! Socket I/O for the wire format: a reader that owns a reusable buffer and hands out
//! messages parsed by [`proto::Decoder`], and a writer that sends a frame header and its
//! JPEG with one vectored write. Neither knows what the messages mean.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::proto::{self, Decoder, FrameHeader, Hello, Message, ProtocolError, Role, HELLO_LEN};

/// Bytes read per `read` call when the buffer has no room, and the first allocation.
const READ_CHUNK: usize = 64 * 1024;

/// What can end a connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{source} (bytes there: {context})")]
    Protocol { source: ProtocolError, context: String },
    #[error("connection closed in the middle of a message at offset {offset} ({have} of {need} bytes received)")]
    Truncated { offset: u64, have: usize, need: String },
    #[error("connection closed during the handshake ({have} of {HELLO_LEN} bytes received)")]
    ClosedInHandshake { have: usize },
    #[error("no handshake from the peer within {0:?}")]
    HandshakeTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What [`MessageReader::next_event`] found.
#[derive(Debug)]
pub enum Event<'a> {
    Message(Message<'a>),
    /// The socket's read timeout passed with no complete message; partial input is kept.
    Idle,
    /// The peer closed the connection between two messages.
    Eof,
}

/// Reads messages from a byte stream into one reused buffer.
pub struct MessageReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    decoder: Decoder,
}

impl<R: Read> MessageReader<R> {
    pub fn new(inner: R) -> Self {
        MessageReader { inner, buf: Vec::new(), start: 0, end: 0, decoder: Decoder::new(0) }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The stream announced by the peer so far.
    pub fn stream(&self) -> Option<proto::StreamInfo> {
        self.decoder.stream()
    }

    /// Reads the peer's hello. Timeouts of the underlying socket count against `timeout`.
    pub fn read_hello(&mut self, expected: Role, timeout: Duration) -> Result<Hello, NetError> {
        let started = std::time::Instant::now();
        loop {
            let have = &self.buf[self.start..self.end];
            match Hello::decode(have, expected) {
                Ok(Some(h)) => {
                    self.start += HELLO_LEN;
                    self.decoder = Decoder::new(HELLO_LEN as u64);
                    return Ok(h);
                }
                Ok(None) => {}
                Err(source) => return Err(self.protocol_error(source)),
            }
            match self.fill(HELLO_LEN) {
                Ok(0) => return Err(NetError::ClosedInHandshake { have: self.end - self.start }),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if started.elapsed() >= timeout {
                        return Err(NetError::HandshakeTimeout(timeout));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until one message is complete, the socket times out, or the peer closes.
    pub fn next_event(&mut self) -> Result<Event<'_>, NetError> {
        loop {
            let need = match self.decoder.check(&self.buf[self.start..self.end]) {
                Ok(Some(_)) => {
                    let at = self.decoder.offset;
                    let (msg, used) = match self.decoder.decode(&self.buf[self.start..self.end]) {
                        Ok(Some(m)) => m,
                        Ok(None) => unreachable!("check() said the message is complete"),
                        Err(source) => {
                            let context =
                                hex_context(&self.buf[self.start..self.end], source_offset(&source).saturating_sub(at));
                            return Err(NetError::Protocol { source, context });
                        }
                    };
                    self.start += used;
                    return Ok(Event::Message(msg));
                }
                Ok(None) => self.declared_len(),
                Err(e) => return Err(self.protocol_error(e)),
            };
            match self.fill(need) {
                Ok(0) => {
                    let have = self.end - self.start;
                    if have == 0 {
                        return Ok(Event::Eof);
                    }
                    return Err(NetError::Truncated {
                        offset: self.decoder.offset,
                        have,
                        need: if need > have { need.to_string() } else { "more".into() },
                    });
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Ok(Event::Idle),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl<R: Read> MessageReader<R> {
    /// Total bytes the message at the buffer's start needs, as far as the header tells.
    fn declared_len(&self) -> usize {
        let have = &self.buf[self.start..self.end];
        if have.len() < proto::MSG_HEADER_LEN {
            return proto::MSG_HEADER_LEN;
        }
        let len = u32::from_be_bytes([have[4], have[5], have[6], have[7]]) as usize;
        proto::MSG_HEADER_LEN + len
    }

    /// Makes room for a message of `need` bytes (already checked against the cap) and reads
    /// once. The buffer grows with what arrives, at most doubling, so a peer that declares a
    /// large frame and sends nothing does not make us allocate the declared size.
    fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.start > 0 && (self.start == self.end || self.start + need > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(READ_CHUNK);
            let target = if need > self.end { need.min(grown) } else { grown };
            self.buf.resize(target, 0);
        }
        let n = self.inner.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    fn protocol_error(&self, source: ProtocolError) -> NetError {
        let base = self.decoder.offset;
        let rel = source_offset(&source).saturating_sub(base);
        NetError::Protocol { context: hex_context(&self.buf[self.start..self.end], rel), source }
    }
}

fn source_offset(e: &ProtocolError) -> u64 {
    match e {
        ProtocolError::BadMagic { offset, .. }
        | ProtocolError::WrongRole { offset, .. }
        | ProtocolError::UnknownType { offset, .. }
        | ProtocolError::TooLarge { offset, .. }
        | ProtocolError::Malformed { offset, .. } => *offset,
        ProtocolError::Version { .. } => 4,
    }
}

/// A bounded hex dump of at most 32 bytes around `at` (relative to `buf`).
pub fn hex_context(buf: &[u8], at: u64) -> String {
    let at = (at as usize).min(buf.len());
    let from = at.saturating_sub(8);
    let to = (from + 32).min(buf.len());
    if from == to {
        return "none".into();
    }
    let mut s = String::new();
    for (i, b) in buf[from..to].iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        if from + i == at {
            s.push('>');
        }
        s.push_str(&format!("{b:02x}"));
    }
    if to < buf.len() {
        s.push_str(" ...");
    }
    s
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Writes messages to a stream; one buffer for headers is reused across messages.
pub struct MessageWriter<W> {
    inner: W,
    head: Vec<u8>,
}

impl<W: Write> MessageWriter<W> {
    pub fn new(inner: W) -> Self {
        MessageWriter { inner, head: Vec::with_capacity(128) }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn write_hello(&mut self, hello: &Hello) -> io::Result<()> {
        self.head.clear();
        hello.encode(&mut self.head);
        self.inner.write_all(&self.head)?;
        self.inner.flush()
    }

    /// Writes a small message (anything but a frame, which goes through [`write_frame`]).
    ///
    /// [`write_frame`]: MessageWriter::write_frame
    pub fn write_message(&mut self, msg: &Message<'_>) -> io::Result<()> {
        self.head.clear();
        msg.encode(&mut self.head);
        self.inner.write_all(&self.head)?;
        self.inner.flush()
    }

    /// Writes a frame: headers and JPEG in vectored writes, without copying the JPEG.
    pub fn write_frame(&mut self, header: &FrameHeader, jpeg: &[u8]) -> io::Result<()> {
        debug_assert_eq!(header.jpeg_len as usize, jpeg.len());
        self.head.clear();
        proto::encode_frame_head(header, &mut self.head);
        let mut bufs = [IoSlice::new(&self.head), IoSlice::new(jpeg)];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        while !slices.is_empty() {
            match self.inner.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.flush()
    }
}

/// Sets the socket options every framecast connection uses.
pub fn configure(stream: &TcpStream, read_timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(read_timeout))?;
    Ok(())
}

/// Connects to `addr` (HOST:PORT), retrying refused connections with a capped backoff until
/// `patience` has passed or `stop` is set. Other errors (a name that does not resolve, no
/// route) fail at once.
pub fn connect_with_retry(
    addr: &str,
    patience: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    use std::sync::atomic::Ordering;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut logged = false;
    loop {
        let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        let retry = matches!(last.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut);
        if !retry || started.elapsed() + delay > patience || stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(last.kind(), format!("cannot connect to {addr}: {last}")));
        }
        if !logged {
            tracing::info!(%addr, "waiting for the peer to listen");
            logged = true;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
