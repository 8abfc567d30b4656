//! Socket I/O for the wire format: a reader that owns a reusable buffer and hands out
//! messages parsed by [`proto::Decoder`], and a writer that sends a frame header and its
//! JPEG with one vectored write. Neither knows what the messages mean.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use super::proto::{self, Decoder, FrameHeader, Hello, Message, ProtocolError, Role, HELLO_LEN};

/// Bytes read per `read` call when the buffer has no room, and the first allocation.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What can end a connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{error} (bytes there: {context})")]
    Protocol { error: ProtocolError, context: String },
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

impl<R> MessageReader<R> {
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The same reader over another byte source (the same bytes, e.g. decrypted): the parse
    /// state and any bytes already buffered are kept.
    pub fn map_inner<S>(self, f: impl FnOnce(R) -> S) -> MessageReader<S> {
        let MessageReader { inner, buf, start, end, decoder } = self;
        MessageReader { inner: f(inner), buf, start, end, decoder }
    }

    /// Removes and returns the bytes read from the source but not parsed yet (after the
    /// hello, the start of whatever follows it), so another layer can take them over.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.start, self.end) = (0, 0);
        rest
    }
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

    /// Bytes reserved for the read buffer, so tests and fuzz targets can check that a
    /// declared length is not allocated before its bytes arrive.
    #[doc(hidden)]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
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
            let need = match self.decoder.need(&self.buf[self.start..self.end]) {
                Ok(need) if need <= self.end - self.start => {
                    let at = self.decoder.offset;
                    let (msg, used) = match self.decoder.decode(&self.buf[self.start..self.end]) {
                        Ok(Some(m)) => m,
                        Ok(None) => unreachable!("check() said the message is complete"),
                        Err(source) => {
                            let context =
                                hex_context(&self.buf[self.start..self.end], source_offset(&source).saturating_sub(at));
                            return Err(NetError::Protocol { error: source, context });
                        }
                    };
                    self.start += used;
                    return Ok(Event::Message(msg));
                }
                Ok(need) => need,
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
        // A signal interrupts a socket read that has a timeout even with SA_RESTART; retry.
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.end += n;
        Ok(n)
    }

    fn protocol_error(&self, source: ProtocolError) -> NetError {
        let base = self.decoder.offset;
        let rel = source_offset(&source).saturating_sub(base);
        NetError::Protocol { context: hex_context(&self.buf[self.start..self.end], rel), error: source }
    }
}

/// Where in the stream `e` points: its offset, or the hello's version field (bytes 4-5) for
/// a version mismatch.
fn source_offset(e: &ProtocolError) -> u64 {
    e.offset().unwrap_or(4)
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

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The same writer over another sink (e.g. one that encrypts).
    pub fn map_inner<S>(self, f: impl FnOnce(W) -> S) -> MessageWriter<S> {
        MessageWriter { inner: f(self.inner), head: self.head }
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
        write_all_vectored(&mut self.inner, &mut [IoSlice::new(&self.head), IoSlice::new(jpeg)])?;
        self.inner.flush()
    }
}

/// Writes all of `bufs` with vectored writes (`Write::write_all_vectored` is not stable).
pub fn write_all_vectored<W: Write + ?Sized>(w: &mut W, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::net::proto::{Ack, Ping, Pong, StreamInfo, FRAME_HEADER_LEN, MAGIC, MSG_HEADER_LEN, VERSION};
    use crate::testutil::{sample_header, Script};
    use proptest::prelude::*;

    /// A message with its JPEG copied out of the reader's buffer, or a timeout.
    #[derive(Debug, PartialEq)]
    enum Got {
        Frame(FrameHeader, Vec<u8>),
        Report(Vec<u8>),
        Other(Message<'static>),
        Idle,
    }

    fn got(m: &Message<'_>) -> Got {
        match *m {
            Message::Frame(h, j) => Got::Frame(h, j.to_vec()),
            Message::StreamInfo(s) => Got::Other(Message::StreamInfo(s)),
            Message::Ack(a) => Got::Other(Message::Ack(a)),
            Message::Ping(p) => Got::Other(Message::Ping(p)),
            Message::Pong(p) => Got::Other(Message::Pong(p)),
            Message::SetQuality(q) => Got::Other(Message::SetQuality(q)),
            Message::QualityStep(n) => Got::Other(Message::QualityStep(n)),
            Message::Report(r) => Got::Report(r.to_vec()),
        }
    }

    const INFO: StreamInfo = StreamInfo { width: 320, height: 240, fps_milli: 30_000 };
    const CLOCK: [u8; 16] = [0x5a; 16];

    /// Frame `seq` with a JPEG of `len` bytes; quality and subsampling differ from the
    /// sample header's defaults, so that a reader mixing up fields shows.
    fn frame(seq: u64, info: StreamInfo, len: usize) -> (FrameHeader, Vec<u8>) {
        let h = FrameHeader { quality: 80, subsampling: Subsampling::S422.to_wire(), ..sample_header(seq, info, len) };
        (h, (0..len).map(|i| (i as u64 * 13 + seq) as u8).collect())
    }

    fn hello_bytes(role: Role) -> Vec<u8> {
        let mut b = Vec::new();
        Hello::new(role, CLOCK).encode(&mut b);
        b
    }

    /// A sender's byte stream: hello, stream-info, frames of the given sizes with an ack, a
    /// ping, a pong and a set-quality in between. Returns the bytes and the messages.
    fn fixture(frame_sizes: &[usize]) -> (Vec<u8>, Vec<Got>) {
        let mut b = hello_bytes(Role::Sender);
        let mut want = Vec::new();
        let mut push = |m: Message<'_>| {
            m.encode(&mut b);
            want.push(got(&m));
        };
        push(Message::StreamInfo(INFO));
        let extras = [
            Message::Ack(Ack { seq: 1, received_us: 2, decoded_us: 3, displayed_us: 4 }),
            Message::Ping(Ping { id: 7, t1_us: 1234 }),
            Message::Pong(Pong { id: 7, t1_us: 1234, t2_us: 2000, t3_us: 2001 }),
            Message::SetQuality(42),
            Message::Report(br#"{"type":"interval","fps":29.5}"#),
        ];
        for (i, &len) in frame_sizes.iter().enumerate() {
            let (h, j) = frame(i as u64, INFO, len);
            push(Message::Frame(h, &j));
            if let Some(m) = extras.get(i) {
                push(*m);
            }
        }
        for m in extras.iter().skip(frame_sizes.len()) {
            push(*m);
        }
        (b, want)
    }

    /// Reads the hello and then events until EOF or an error.
    fn drain<R: Read>(r: &mut MessageReader<R>, budget: usize) -> (Vec<Got>, Result<(), NetError>) {
        let mut out = Vec::new();
        for _ in 0..budget {
            match r.next_event() {
                Ok(Event::Message(m)) => out.push(got(&m)),
                Ok(Event::Idle) => out.push(Got::Idle),
                Ok(Event::Eof) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
        panic!("no EOF after {budget} events");
    }

    fn read_stream(script: Script, budget: usize) -> (Vec<Got>, Result<(), NetError>) {
        let mut r = MessageReader::new(script);
        let hello = r.read_hello(Role::Sender, Duration::from_secs(1)).expect("hello");
        assert_eq!(hello, Hello::new(Role::Sender, CLOCK));
        drain(&mut r, budget)
    }

    fn protocol_source<T: std::fmt::Debug>(r: Result<T, NetError>) -> ProtocolError {
        match r {
            Err(NetError::Protocol { error, .. }) => error,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    /// The hello and a stream-info for `info`: 44 bytes.
    fn preamble(info: StreamInfo) -> Vec<u8> {
        let mut b = hello_bytes(Role::Sender);
        Message::StreamInfo(info).encode(&mut b);
        b
    }

    // ---- splits ----

    #[test]
    fn every_split_across_two_reads_gives_the_same_messages() {
        let (bytes, want) = fixture(&[0, 1, 333, 1500]);
        let (unsplit, end) = read_stream(Script::split(&bytes, &[]), 100);
        end.unwrap();
        assert_eq!(unsplit, want);
        for split in 0..=bytes.len() {
            let (msgs, end) = read_stream(Script::split(&bytes, &[split]), 100);
            assert!(end.is_ok(), "split at {split}: {end:?}");
            assert_eq!(msgs, unsplit, "split at {split}");
        }
    }

    #[test]
    fn one_byte_per_read_gives_the_same_messages() {
        // One frame is larger than the first buffer, so the buffer has to grow.
        let (bytes, want) = fixture(&[10, 100_000, 0, 64 * 1024 - 16]);
        let (msgs, end) = read_stream(Script::bytewise(&bytes), 100);
        end.unwrap();
        assert_eq!(msgs, want);
    }

    #[test]
    fn a_writer_feeds_a_reader() {
        let (_, want) = fixture(&[5, 70_000]);
        let mut w = MessageWriter::new(Vec::new());
        w.write_hello(&Hello::new(Role::Sender, CLOCK)).unwrap();
        for m in &want {
            match m {
                Got::Frame(h, j) => w.write_frame(h, j).unwrap(),
                Got::Other(m) => w.write_message(m).unwrap(),
                Got::Report(r) => w.write_message(&Message::Report(r)).unwrap(),
                Got::Idle => unreachable!(),
            }
        }
        let (msgs, end) = read_stream(Script::split(w.get_ref(), &[]), 100);
        end.unwrap();
        assert_eq!(msgs, want);
    }

    #[test]
    fn idle_keeps_partial_input() {
        let (bytes, want) = fixture(&[200]);
        let script = Script::new()
            .bytes(&bytes[..30])
            .fail(io::ErrorKind::WouldBlock)
            .bytes(&bytes[30..100])
            .fail(io::ErrorKind::TimedOut)
            .bytes(&bytes[100..]);
        let (msgs, end) = read_stream(script, 100);
        end.unwrap();
        // Stream-info is complete at byte 44: first a timeout mid stream-info, then one
        // mid frame.
        let mut expect = vec![Got::Idle];
        expect.push(want[0].clone_other());
        expect.push(Got::Idle);
        expect.extend(want.into_iter().skip(1));
        assert_eq!(msgs, expect);
    }

    impl Got {
        fn clone_other(&self) -> Got {
            match self {
                Got::Other(m) => Got::Other(*m),
                other => panic!("not a small message: {other:?}"),
            }
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let (bytes, want) = fixture(&[50]);
        let script = bytes.chunks(16).fold(Script::new(), |s, chunk| s.fail(io::ErrorKind::Interrupted).bytes(chunk));
        let (msgs, end) = read_stream(script, 100);
        end.unwrap();
        assert_eq!(msgs, want);
    }

    // ---- end of stream ----

    #[test]
    fn eof_between_messages_is_a_clean_close() {
        let (bytes, want) = fixture(&[]);
        let (msgs, end) = read_stream(Script::bytewise(&bytes), 100);
        assert!(end.is_ok());
        assert_eq!(msgs, want);
        // And right after the hello.
        let (msgs, end) = read_stream(Script::bytewise(&hello_bytes(Role::Sender)), 10);
        assert!(end.is_ok() && msgs.is_empty());
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let mut b = preamble(INFO);
        let (h, j) = frame(1, INFO, 1000);
        Message::Frame(h, &j).encode(&mut b);
        let total = MSG_HEADER_LEN + FRAME_HEADER_LEN + 1000;
        for have in [1, 7, 8, 60, total - 1] {
            let cut = &b[..44 + have];
            let (msgs, end) = read_stream(Script::split(cut, &[]), 10);
            assert_eq!(msgs.len(), 1);
            match end {
                Err(NetError::Truncated { offset, have: got_have, need }) => {
                    assert_eq!(offset, 44);
                    assert_eq!(got_have, have);
                    let want_need = if have < MSG_HEADER_LEN { MSG_HEADER_LEN } else { total };
                    assert_eq!(need, want_need.to_string());
                }
                other => panic!("cut after {have} bytes: expected Truncated, got {other:?}"),
            }
        }
    }

    #[test]
    fn eof_or_silence_during_the_handshake() {
        let b = hello_bytes(Role::Sender);
        let mut r = MessageReader::new(Script::split(&b[..10], &[4]));
        assert!(matches!(
            r.read_hello(Role::Sender, Duration::from_secs(1)),
            Err(NetError::ClosedInHandshake { have: 10 })
        ));

        let mut r = MessageReader::new(Script::new().fail(io::ErrorKind::WouldBlock));
        assert!(matches!(r.read_hello(Role::Sender, Duration::ZERO), Err(NetError::HandshakeTimeout(_))));

        // Timeouts shorter than the handshake's patience are waited out.
        let script = Script::new().fail(io::ErrorKind::WouldBlock).fail(io::ErrorKind::TimedOut).bytes(&b);
        let mut r = MessageReader::new(script);
        assert_eq!(r.read_hello(Role::Sender, Duration::from_secs(60)).unwrap(), Hello::new(Role::Sender, CLOCK));
    }

    // ---- handshake errors through the reader ----

    #[test]
    fn bad_magic_stops_reading_at_the_first_wrong_byte() {
        for wrong_at in 0..4 {
            let mut b = hello_bytes(Role::Sender);
            b[wrong_at] = b'x';
            let mut r = MessageReader::new(Script::bytewise(&b));
            let e = protocol_source(r.read_hello(Role::Sender, Duration::from_secs(1)));
            assert_eq!(e, ProtocolError::BadMagic { offset: 0, got: b[..wrong_at + 1].to_vec() });
            assert_eq!(r.get_ref().handed_out(), wrong_at + 1);
        }
    }

    #[test]
    fn version_mismatch_stops_reading_after_the_version_field() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(VERSION + 1).to_be_bytes());
        b.extend_from_slice(&[0xee; 100]); // a future hello of another size
        let mut r = MessageReader::new(Script::bytewise(&b));
        let e = r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap_err();
        assert_eq!(r.get_ref().handed_out(), 6);
        let text = e.to_string();
        assert!(text.contains("version 1") && text.contains("version 2"), "{text}");
        assert_eq!(protocol_source::<()>(Err(e)), ProtocolError::Version { ours: 1, theirs: 2 });
    }

    #[test]
    fn wrong_role_through_the_reader() {
        let mut r = MessageReader::new(Script::split(&hello_bytes(Role::Sender), &[]));
        let e = protocol_source(r.read_hello(Role::Receiver, Duration::from_secs(1)));
        assert_eq!(e, ProtocolError::WrongRole { offset: 6, expected: Role::Receiver, got: Role::Sender });
    }

    // ---- message errors through the reader ----

    #[test]
    fn message_errors_carry_stream_offsets() {
        // Unknown type, one byte after the stream-info.
        let mut b = preamble(INFO);
        b.push(9);
        let (_, end) = read_stream(Script::bytewise(&b), 10);
        assert_eq!(protocol_source(end), ProtocolError::UnknownType { offset: 44, ty: 9 });

        // Frame before stream-info.
        let mut b = hello_bytes(Role::Sender);
        let (h, j) = frame(0, INFO, 3);
        Message::Frame(h, &j).encode(&mut b);
        let (_, end) = read_stream(Script::split(&b, &[]), 10);
        assert!(matches!(protocol_source(end), ProtocolError::Malformed { offset: 24, .. }));

        // Wrong frame size, after one good frame.
        let mut b = preamble(INFO);
        Message::Frame(h, &j).encode(&mut b);
        let bad = FrameHeader { width: 640, ..h };
        Message::Frame(bad, &j).encode(&mut b);
        let (msgs, end) = read_stream(Script::split(&b, &[]), 10);
        assert_eq!(msgs.len(), 2);
        assert!(matches!(protocol_source(end), ProtocolError::Malformed { offset, .. } if offset == 44 + 63 + 8 + 40));
    }

    #[test]
    fn too_large_is_rejected_from_the_header_alone() {
        let info = StreamInfo { width: 7680, height: 4320, fps_milli: 0 };
        let cap = FRAME_HEADER_LEN as u64 + info.max_jpeg_len();
        let mut b = preamble(info);
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&(cap as u32 + 1).to_be_bytes());
        b.extend_from_slice(&[0; 100]);
        let mut r = MessageReader::new(Script::bytewise(&b));
        r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap();
        let (msgs, end) = drain(&mut r, 10);
        assert_eq!(msgs.len(), 1);
        assert_eq!(protocol_source(end), ProtocolError::TooLarge { offset: 48, what: "frame", len: cap + 1, max: cap });
        assert_eq!(r.get_ref().handed_out(), 44 + 8, "nothing past the header is read");
        assert!(r.buffer_capacity() <= READ_CHUNK);
    }

    #[test]
    fn a_declared_frame_is_not_allocated_before_it_arrives() {
        let info = StreamInfo { width: 7680, height: 4320, fps_milli: 0 };
        let cap = FRAME_HEADER_LEN as u64 + info.max_jpeg_len();
        assert!(cap > 190_000_000);
        let mut b = preamble(info);
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&(cap as u32).to_be_bytes());
        b.extend_from_slice(&[0xab; 100]);
        for script in [Script::split(&b, &[]), Script::bytewise(&b), Script::split(&b, &[44, 52])] {
            let mut r = MessageReader::new(script);
            r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap();
            let (msgs, end) = drain(&mut r, 200);
            assert_eq!(msgs, vec![Got::Other(Message::StreamInfo(info))]);
            match end {
                Err(NetError::Truncated { offset: 44, have: 108, need }) => {
                    assert_eq!(need, (cap + 8).to_string())
                }
                other => panic!("expected Truncated, got {other:?}"),
            }
            assert!(r.buffer_capacity() <= READ_CHUNK, "buffer grew to {} bytes", r.buffer_capacity());
        }
    }

    #[test]
    fn the_buffer_stays_small_over_a_long_stream() {
        // 300 KB of small messages, with every read ending 3 bytes into the next message,
        // so the buffer is never empty when it is refilled and must be compacted instead.
        let mut b = preamble(INFO);
        let mut cuts = Vec::new();
        let mut n = 0;
        while b.len() < 300_000 {
            match n % 3 {
                0 => Message::Ping(Ping { id: n, t1_us: n }).encode(&mut b),
                1 => Message::Ack(Ack { seq: n, ..Ack::default() }).encode(&mut b),
                _ => Message::SetQuality((n % 100 + 1) as u8).encode(&mut b),
            }
            cuts.push(b.len() + 3);
            n += 1;
        }
        let mut r = MessageReader::new(Script::split(&b, &cuts));
        r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap();
        let (msgs, end) = drain(&mut r, n as usize + 10);
        end.unwrap();
        assert_eq!(msgs.len() as u64, n + 1);
        assert!(r.buffer_capacity() <= READ_CHUNK, "buffer grew to {} bytes", r.buffer_capacity());
    }

    #[test]
    fn protocol_error_display_has_a_bounded_hex_context() {
        // A frame with the wrong width, preceded and followed by many bytes.
        let mut b = preamble(INFO);
        let (h, j) = frame(1, INFO, 500);
        Message::Frame(FrameHeader { width: 0x0abc, ..h }, &j).encode(&mut b);
        let (_, end) = read_stream(Script::split(&b, &[]), 10);
        let e = end.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("offset 92"), "{text}");
        let context = text.split("bytes there: ").nth(1).expect("a context").trim_end_matches(')');
        let bytes: Vec<&str> = context.split_whitespace().filter(|t| *t != "...").collect();
        assert!(!bytes.is_empty() && bytes.len() <= 32, "{context}");
        assert!(context.ends_with(" ..."), "{context}");
        let marked: Vec<&&str> = bytes.iter().filter(|t| t.starts_with('>')).collect();
        assert_eq!(marked, [&">0a"], "the marker points at the width field: {context}");

        // Garbage instead of a hello.
        let garbage = vec![0x47u8; 4096];
        let mut r = MessageReader::new(Script::split(&garbage, &[]));
        let text = r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap_err().to_string();
        let context = text.split("bytes there: ").nth(1).unwrap().trim_end_matches(')');
        assert!(context.starts_with(">47 "), "{text}");
        assert!(context.split_whitespace().count() <= HELLO_LEN, "only bytes read for the hello: {text}");
    }

    #[test]
    fn hex_context_is_bounded_and_marks_the_offset() {
        let buf: Vec<u8> = (0..=255).collect();
        for at in [0u64, 1, 8, 100, 255, 256, 10_000] {
            let s = hex_context(&buf, at);
            let tokens: Vec<&str> = s.split_whitespace().filter(|t| *t != "...").collect();
            assert!(tokens.len() <= 32, "{at}: {s}");
            let marked: Vec<&&str> = tokens.iter().filter(|t| t.starts_with('>')).collect();
            if at < 256 {
                assert_eq!(marked, [&format!(">{at:02x}").as_str()], "{s}");
            } else {
                assert!(marked.is_empty(), "{s}");
            }
        }
        assert_eq!(hex_context(&buf, 100).split_whitespace().next(), Some("5c"));
        assert_eq!(hex_context(&[], 0), "none");
        assert_eq!(hex_context(&[1, 2], 1), "01 >02");
    }

    // ---- writer ----

    /// Accepts at most 7 bytes per call and fails every other call with `Interrupted`.
    #[derive(Default)]
    struct Trickle {
        out: Vec<u8>,
        calls: usize,
        flushes: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(7);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn writer_survives_short_and_interrupted_writes() {
        let (h, j) = frame(3, INFO, 1000);
        let mut w = MessageWriter::new(Trickle::default());
        w.write_hello(&Hello::new(Role::Sender, CLOCK)).unwrap();
        w.write_message(&Message::StreamInfo(INFO)).unwrap();
        w.write_frame(&h, &j).unwrap();
        let mut want = preamble(INFO);
        Message::Frame(h, &j).encode(&mut want);
        assert_eq!(w.get_ref().out, want);
        assert_eq!(w.get_ref().flushes, 3, "one flush per message");
    }

    // ---- properties ----

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_any_chunking_gives_the_same_messages(
            cuts in prop::collection::vec(0..4000usize, 0..40),
        ) {
            let (bytes, want) = fixture(&[0, 7, 900, 2500]);
            let (msgs, end) = read_stream(Script::split(&bytes, &cuts), 200);
            prop_assert!(end.is_ok(), "{:?}", end);
            prop_assert_eq!(msgs, want);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic_the_reader(
            bytes in prop::collection::vec(any::<u8>(), 0..3000),
            cuts in prop::collection::vec(0..3000usize, 0..8),
            typed in any::<bool>(),
        ) {
            let info = StreamInfo { width: 64, height: 48, fps_milli: 0 };
            let cap = MSG_HEADER_LEN + FRAME_HEADER_LEN + info.max_jpeg_len() as usize;
            let mut bytes = bytes;
            if typed && bytes.len() >= 8 {
                bytes[0] = bytes[0] % 6 + 1;
                bytes[1..4].fill(0);
                let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) % 3000;
                bytes[4..8].copy_from_slice(&len.to_be_bytes());
            }
            let mut all = preamble(info);
            all.extend_from_slice(&bytes);
            let cuts: Vec<usize> = cuts.iter().map(|c| c + 44).collect();
            let mut r = MessageReader::new(Script::split(&all, &cuts));
            r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap();
            let (msgs, _) = drain(&mut r, all.len() + 10);
            prop_assert!(!msgs.is_empty());
            prop_assert!(r.buffer_capacity() <= READ_CHUNK.max(2 * cap));

            // The same bytes straight after a hello (no stream-info) do not panic either.
            let mut all = hello_bytes(Role::Sender);
            all.extend_from_slice(&bytes);
            let mut r = MessageReader::new(Script::bytewise(&all));
            r.read_hello(Role::Sender, Duration::from_secs(1)).unwrap();
            let _ = drain(&mut r, all.len() + 10);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic_the_handshake(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut r = MessageReader::new(Script::bytewise(&bytes));
            if r.read_hello(Role::Receiver, Duration::from_secs(1)).is_ok() {
                prop_assert!(bytes.len() >= HELLO_LEN);
                prop_assert_eq!(r.get_ref().handed_out(), HELLO_LEN);
            }
        }
    }
}
