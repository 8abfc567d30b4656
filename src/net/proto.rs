//! The framecast wire format, version 1: pure code over bytes, no I/O.
//!
//! `docs/protocol.md` is the normative description with byte tables; this module is its
//! implementation. Every multi-byte integer is big-endian.
//!
//! Parsing follows one rule: "need more bytes" is `Ok(None)`, never an error, and malformed
//! input is an [`ProtocolError`] that names the stream offset of the offending field. Lengths
//! are checked against a cap before anything is reserved for a message body.

use std::fmt;

/// The first four bytes each peer sends.
pub const MAGIC: [u8; 4] = *b"FCST";
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Bytes in a [`Hello`].
pub const HELLO_LEN: usize = 24;
/// Bytes in a message header: type (1), flags (1), reserved (2), payload length (4).
pub const MSG_HEADER_LEN: usize = 8;
/// Bytes in a frame header, before the JPEG data.
pub const FRAME_HEADER_LEN: usize = 52;
/// Largest stream a peer may announce, in pixels (8K UHD).
pub const MAX_PIXELS: u64 = 7680 * 4320;
/// Largest width or height a peer may announce.
pub const MAX_DIMENSION: u32 = 16384;

/// Which end of the stream a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sender = 1,
    Receiver = 2,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        })
    }
}

/// Chroma subsampling of a JPEG frame, numbered as libjpeg-turbo's `TJSAMP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subsampling {
    S444 = 0,
    S422 = 1,
    S420 = 2,
    Gray = 3,
}

impl Subsampling {
    pub fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::S444,
            1 => Self::S422,
            2 => Self::S420,
            3 => Self::Gray,
            _ => return None,
        })
    }

    /// The name used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Self::S444 => "444",
            Self::S422 => "422",
            Self::S420 => "420",
            Self::Gray => "gray",
        }
    }
}

impl fmt::Display for Subsampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Malformed input. `offset` is the position in the byte stream of the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "bad magic at offset {offset}: expected {:?} (\"FCST\"), got {got:02x?}; the peer is not framecast",
        MAGIC
    )]
    BadMagic { offset: u64, got: Vec<u8> },
    #[error("protocol version mismatch: we speak version {ours}, the peer speaks version {theirs}; run the same framecast release on both ends")]
    Version { ours: u16, theirs: u16 },
    #[error("peer at offset {offset} says it is a {got}, but a {expected} was expected")]
    WrongRole { offset: u64, expected: Role, got: Role },
    #[error("unknown message type {ty} at offset {offset}")]
    UnknownType { offset: u64, ty: u8 },
    #[error("{what} message at offset {offset} declares {len} payload bytes, over the cap of {max}")]
    TooLarge { offset: u64, what: &'static str, len: u64, max: u64 },
    #[error("malformed input at offset {offset}: {what}")]
    Malformed { offset: u64, what: String },
}

impl ProtocolError {
    fn malformed(offset: u64, what: impl Into<String>) -> Self {
        ProtocolError::Malformed { offset, what: what.into() }
    }
}

/// The handshake block each peer sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    /// Identifies the monotonic clock of the peer's host (Linux: the kernel's boot id). Equal
    /// ids mean both ends timestamp with the same clock, so latency can be measured directly.
    pub clock_id: [u8; 16],
}

impl Hello {
    pub fn new(role: Role, clock_id: [u8; 16]) -> Self {
        Hello { version: VERSION, role, clock_id }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.role as u8);
        out.push(0);
        out.extend_from_slice(&self.clock_id);
    }

    /// Parses a hello from the start of a stream. Garbage is rejected as soon as the first
    /// byte that differs from the magic arrives, and a different version as soon as the
    /// version field is complete, even when the rest of the block has another size.
    pub fn decode(buf: &[u8], expected: Role) -> Result<Option<Hello>, ProtocolError> {
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return Err(ProtocolError::BadMagic { offset: 0, got: buf[..n].to_vec() });
        }
        if buf.len() < 6 {
            return Ok(None);
        }
        let version = u16::from_be_bytes([buf[4], buf[5]]);
        if version != VERSION {
            return Err(ProtocolError::Version { ours: VERSION, theirs: version });
        }
        if buf.len() < HELLO_LEN {
            return Ok(None);
        }
        let role = match buf[6] {
            1 => Role::Sender,
            2 => Role::Receiver,
            r => return Err(ProtocolError::malformed(6, format!("role {r}, expected 1 or 2"))),
        };
        if role != expected {
            return Err(ProtocolError::WrongRole { offset: 6, expected, got: role });
        }
        if buf[7] != 0 {
            return Err(ProtocolError::malformed(7, format!("hello flags {:#04x}, expected 0", buf[7])));
        }
        let mut clock_id = [0u8; 16];
        clock_id.copy_from_slice(&buf[8..24]);
        Ok(Some(Hello { version, role, clock_id }))
    }
}

/// Message type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    StreamInfo = 1,
    Frame = 2,
    Ack = 3,
    Ping = 4,
    Pong = 5,
    SetQuality = 6,
}

impl MsgType {
    fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::StreamInfo,
            2 => Self::Frame,
            3 => Self::Ack,
            4 => Self::Ping,
            5 => Self::Pong,
            6 => Self::SetQuality,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::StreamInfo => "stream-info",
            Self::Frame => "frame",
            Self::Ack => "ack",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::SetQuality => "set-quality",
        }
    }

    /// The exact payload length of fixed-size messages.
    fn fixed_len(self) -> Option<usize> {
        match self {
            Self::StreamInfo => Some(12),
            Self::Frame => None,
            Self::Ack => Some(32),
            Self::Ping => Some(16),
            Self::Pong => Some(32),
            Self::SetQuality => Some(4),
        }
    }
}

/// The sender's description of the stream. Sent once after the handshake, and again if the
/// stream changes size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate in thousandths of a frame per second; 0 means "as fast as possible".
    pub fps_milli: u32,
}

impl StreamInfo {
    /// Largest JPEG this stream may carry: libjpeg-turbo's worst case (`tj3JPEGBufSize` for
    /// 4:4:4 with dimensions padded to 16), which no encoder output or camera MJPEG exceeds.
    pub fn max_jpeg_len(&self) -> u64 {
        let pad = |v: u32| (u64::from(v) + 15) & !15;
        pad(self.width) * pad(self.height) * 6 + 2048
    }

    fn validate(&self, offset: u64) -> Result<(), ProtocolError> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION || u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(ProtocolError::malformed(
                offset,
                format!(
                    "stream size {w}x{h}, expected 1..={MAX_DIMENSION} on each side and at most {MAX_PIXELS} pixels"
                ),
            ));
        }
        Ok(())
    }
}

/// Per-frame metadata. Timestamps are microseconds on the sender's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameHeader {
    /// Source frame number: gaps mean frames dropped before the socket.
    pub seq: u64,
    pub capture_us: u64,
    pub encode_start_us: u64,
    pub encode_end_us: u64,
    pub send_us: u64,
    pub width: u16,
    pub height: u16,
    /// JPEG quality 1..=100, or 0 when unknown (a camera's own MJPEG forwarded as is).
    pub quality: u8,
    pub subsampling: u8,
    pub flags: u8,
    pub jpeg_len: u32,
}

impl FrameHeader {
    /// Flag bit: the JPEG is the camera's own MJPEG, forwarded without re-encoding.
    pub const FLAG_PASSTHROUGH: u8 = 1;
}

/// Viewer → sender: one per frame shown (or dropped after it was received).
/// Times are on the viewer's monotonic clock, in microseconds; 0 means "did not happen".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ack {
    pub seq: u64,
    pub received_us: u64,
    pub decoded_us: u64,
    pub displayed_us: u64,
}

/// Clock-sync request: `t1` is the requester's send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ping {
    pub id: u64,
    pub t1_us: u64,
}

/// Clock-sync reply: `t2` is when the ping arrived, `t3` when the pong left, both on the
/// replier's clock. The requester adds `t4` on arrival (NTP's four timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pong {
    pub id: u64,
    pub t1_us: u64,
    pub t2_us: u64,
    pub t3_us: u64,
}

/// One decoded message. A frame's JPEG bytes borrow from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    StreamInfo(StreamInfo),
    Frame(FrameHeader, &'a [u8]),
    Ack(Ack),
    Ping(Ping),
    Pong(Pong),
    SetQuality(u8),
}

impl Message<'_> {
    /// Appends the whole message (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::StreamInfo(s) => {
                put_header(out, MsgType::StreamInfo, 12);
                out.extend_from_slice(&s.width.to_be_bytes());
                out.extend_from_slice(&s.height.to_be_bytes());
                out.extend_from_slice(&s.fps_milli.to_be_bytes());
            }
            Message::Frame(h, jpeg) => {
                let h = FrameHeader { jpeg_len: jpeg.len() as u32, ..*h };
                encode_frame_head(&h, out);
                out.extend_from_slice(jpeg);
            }
            Message::Ack(a) => {
                put_header(out, MsgType::Ack, 32);
                for v in [a.seq, a.received_us, a.decoded_us, a.displayed_us] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::Ping(p) => {
                put_header(out, MsgType::Ping, 16);
                out.extend_from_slice(&p.id.to_be_bytes());
                out.extend_from_slice(&p.t1_us.to_be_bytes());
            }
            Message::Pong(p) => {
                put_header(out, MsgType::Pong, 32);
                for v in [p.id, p.t1_us, p.t2_us, p.t3_us] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::SetQuality(q) => {
                put_header(out, MsgType::SetQuality, 4);
                out.extend_from_slice(&[*q, 0, 0, 0]);
            }
        }
    }
}

fn put_header(out: &mut Vec<u8>, ty: MsgType, len: u32) {
    out.push(ty as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
}

/// Appends the message header and frame header of a frame whose `jpeg_len` JPEG bytes follow
/// separately, so a writer can send both with one vectored write and no copy of the JPEG.
pub fn encode_frame_head(h: &FrameHeader, out: &mut Vec<u8>) {
    put_header(out, MsgType::Frame, FRAME_HEADER_LEN as u32 + h.jpeg_len);
    for v in [h.seq, h.capture_us, h.encode_start_us, h.encode_end_us, h.send_us] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&h.width.to_be_bytes());
    out.extend_from_slice(&h.height.to_be_bytes());
    out.extend_from_slice(&[h.quality, h.subsampling, h.flags, 0]);
    out.extend_from_slice(&h.jpeg_len.to_be_bytes());
}

/// Parses messages from one direction of a connection, keeping the stream offset for errors
/// and the stream description that bounds frame sizes.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    /// Stream offset of the next byte handed to [`Decoder::decode`].
    pub offset: u64,
    stream: Option<StreamInfo>,
}

impl Decoder {
    /// A decoder for bytes that start at stream offset `offset` (after the hello).
    pub fn new(offset: u64) -> Self {
        Decoder { offset, stream: None }
    }

    /// The stream announced so far, if any.
    pub fn stream(&self) -> Option<StreamInfo> {
        self.stream
    }

    /// Checks the message at the start of `buf`: `Ok(Some(len))` when all `len` bytes of it
    /// are present, `Ok(None)` when more bytes are needed (the header, if complete, has been
    /// checked, so the caller may safely reserve up to the declared length).
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if buf.len() < MSG_HEADER_LEN {
            // Reject an unknown type as soon as its byte arrives.
            if let Some(&ty) = buf.first() {
                if MsgType::from_wire(ty).is_none() {
                    return Err(ProtocolError::UnknownType { offset: self.offset, ty });
                }
            }
            return Ok(None);
        }
        let at = self.offset;
        let ty = MsgType::from_wire(buf[0]).ok_or(ProtocolError::UnknownType { offset: at, ty: buf[0] })?;
        if buf[1..4] != [0, 0, 0] {
            return Err(ProtocolError::malformed(
                at + 1,
                format!("flags/reserved bytes {:02x?}, expected zeros", &buf[1..4]),
            ));
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        match ty.fixed_len() {
            Some(fixed) if len != fixed => {
                return Err(ProtocolError::malformed(
                    at + 4,
                    format!("{} message length {len}, expected {fixed}", ty.name()),
                ));
            }
            Some(_) => {}
            None => {
                let Some(stream) = self.stream else {
                    return Err(ProtocolError::malformed(at, "frame before any stream-info message"));
                };
                let max = FRAME_HEADER_LEN as u64 + stream.max_jpeg_len();
                if len as u64 > max {
                    return Err(ProtocolError::TooLarge { offset: at + 4, what: ty.name(), len: len as u64, max });
                }
                if len < FRAME_HEADER_LEN {
                    return Err(ProtocolError::malformed(
                        at + 4,
                        format!("frame message length {len}, shorter than the {FRAME_HEADER_LEN}-byte frame header"),
                    ));
                }
            }
        }
        let total = MSG_HEADER_LEN + len;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Parses one message from the start of `buf`. Returns the message and the number of
    /// bytes it used, or `Ok(None)` if `buf` does not yet hold a whole message. On success the
    /// stream offset advances past the message.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Message<'a>, usize)>, ProtocolError> {
        let Some(total) = self.check(buf)? else {
            return Ok(None);
        };
        let at = self.offset + MSG_HEADER_LEN as u64;
        let p = &buf[MSG_HEADER_LEN..total];
        let u64_at = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_be_bytes(p[i..i + 2].try_into().expect("2 bytes"));
        let msg = match MsgType::from_wire(buf[0]).expect("checked") {
            MsgType::StreamInfo => {
                let s = StreamInfo { width: u32_at(0), height: u32_at(4), fps_milli: u32_at(8) };
                s.validate(at)?;
                self.stream = Some(s);
                Message::StreamInfo(s)
            }
            MsgType::Frame => {
                let h = FrameHeader {
                    seq: u64_at(0),
                    capture_us: u64_at(8),
                    encode_start_us: u64_at(16),
                    encode_end_us: u64_at(24),
                    send_us: u64_at(32),
                    width: u16_at(40),
                    height: u16_at(42),
                    quality: p[44],
                    subsampling: p[45],
                    flags: p[46],
                    jpeg_len: u32_at(48),
                };
                if p[47] != 0 {
                    return Err(ProtocolError::malformed(at + 47, format!("reserved byte {:#04x}, expected 0", p[47])));
                }
                let body = p.len() - FRAME_HEADER_LEN;
                if h.jpeg_len as usize != body {
                    return Err(ProtocolError::malformed(
                        at + 48,
                        format!(
                            "jpeg length {} disagrees with the {body} bytes that follow the frame header",
                            h.jpeg_len
                        ),
                    ));
                }
                let stream = self.stream.expect("checked by check()");
                if u32::from(h.width) != stream.width || u32::from(h.height) != stream.height {
                    return Err(ProtocolError::malformed(
                        at + 40,
                        format!(
                            "frame size {}x{} differs from the announced stream size {}x{}",
                            h.width, h.height, stream.width, stream.height
                        ),
                    ));
                }
                if h.quality > 100 {
                    return Err(ProtocolError::malformed(at + 44, format!("quality {}, expected 0..=100", h.quality)));
                }
                if Subsampling::from_wire(h.subsampling).is_none() {
                    return Err(ProtocolError::malformed(
                        at + 45,
                        format!("subsampling code {}, expected 0..=3", h.subsampling),
                    ));
                }
                Message::Frame(h, &p[FRAME_HEADER_LEN..])
            }
            MsgType::Ack => Message::Ack(Ack {
                seq: u64_at(0),
                received_us: u64_at(8),
                decoded_us: u64_at(16),
                displayed_us: u64_at(24),
            }),
            MsgType::Ping => Message::Ping(Ping { id: u64_at(0), t1_us: u64_at(8) }),
            MsgType::Pong => {
                Message::Pong(Pong { id: u64_at(0), t1_us: u64_at(8), t2_us: u64_at(16), t3_us: u64_at(24) })
            }
            MsgType::SetQuality => {
                let q = p[0];
                if !(1..=100).contains(&q) || p[1..4] != [0, 0, 0] {
                    return Err(ProtocolError::malformed(
                        at,
                        format!("set-quality payload {p:02x?}, expected a quality 1..=100 and three zero bytes"),
                    ));
                }
                Message::SetQuality(q)
            }
        };
        self.offset += total as u64;
        Ok(Some((msg, total)))
    }
}
