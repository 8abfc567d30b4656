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
/// Largest payload of a report message (the viewer's stats as JSON).
pub const MAX_REPORT_LEN: usize = 64 * 1024;

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

use crate::format::Subsampling;

/// The frame header's `subsampling` byte (`docs/protocol.md`): libjpeg-turbo's `TJSAMP`
/// numbers. The type lives in [`crate::format`]; only its wire code is defined here.
impl Subsampling {
    /// The wire code of this subsampling.
    pub fn to_wire(self) -> u8 {
        match self {
            Self::S444 => 0,
            Self::S422 => 1,
            Self::S420 => 2,
            Self::Gray => 3,
        }
    }

    /// The subsampling a wire code stands for; `None` for a code no version defines.
    pub fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::S444,
            1 => Self::S422,
            2 => Self::S420,
            3 => Self::Gray,
            _ => return None,
        })
    }
}

/// Malformed input. `offset` is the position in the byte stream of the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "bad magic at offset {offset}: expected {:02x?} (\"FCST\"), got {got:02x?}; the peer is not framecast",
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

    /// The stream offset the error names; `None` for a version mismatch, which is about the
    /// whole hello rather than a byte of it.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ProtocolError::BadMagic { offset, .. }
            | ProtocolError::WrongRole { offset, .. }
            | ProtocolError::UnknownType { offset, .. }
            | ProtocolError::TooLarge { offset, .. }
            | ProtocolError::Malformed { offset, .. } => Some(*offset),
            ProtocolError::Version { .. } => None,
        }
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
    /// Flag `0x01`: this peer has a key, and a secure handshake follows the hellos (see
    /// `net::secure`). Both peers must agree; each checks it after the hellos.
    pub keyed: bool,
}

impl Hello {
    /// The hello flag that announces a key (and the secure handshake after the hellos).
    pub const FLAG_KEYED: u8 = 0x01;

    pub fn new(role: Role, clock_id: [u8; 16]) -> Self {
        Hello { version: VERSION, role, clock_id, keyed: false }
    }

    /// The same hello, announcing a key or not.
    pub fn keyed(self, keyed: bool) -> Self {
        Hello { keyed, ..self }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.role as u8);
        out.push(if self.keyed { Self::FLAG_KEYED } else { 0 });
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
        if buf[7] & !Self::FLAG_KEYED != 0 {
            return Err(ProtocolError::malformed(
                7,
                format!("hello flags {:#04x}, expected 0 or 0x01 (key required)", buf[7]),
            ));
        }
        let mut clock_id = [0u8; 16];
        clock_id.copy_from_slice(&buf[8..24]);
        Ok(Some(Hello { version, role, clock_id, keyed: buf[7] & Self::FLAG_KEYED != 0 }))
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
    Report = 7,
    QualityStep = 8,
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
            7 => Self::Report,
            8 => Self::QualityStep,
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
            Self::Report => "report",
            Self::QualityStep => "quality-step",
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
            Self::Report => None,
            Self::QualityStep => Some(4),
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
    /// Viewer → sender: its latest stats interval, as a JSON object (UTF-8).
    Report(&'a [u8]),
    /// Viewer → sender: quality up (+n) or down (−n) by n key presses, 1 ≤ |n| ≤ [`MAX_QUALITY_STEP`].
    QualityStep(i8),
}

/// The most key presses one `QualityStep` carries.
pub const MAX_QUALITY_STEP: i8 = 10;

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
            Message::Report(json) => {
                put_header(out, MsgType::Report, json.len() as u32);
                out.extend_from_slice(json);
            }
            Message::QualityStep(n) => {
                put_header(out, MsgType::QualityStep, 4);
                out.extend_from_slice(&[*n as u8, 0, 0, 0]);
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
        let need = self.need(buf)?;
        Ok((buf.len() >= need).then_some(need))
    }

    /// How many bytes the message at the start of `buf` takes in all, as far as `buf` tells:
    /// its declared length once the header is complete and checked (at most the cap for its
    /// type), the header's length before that. A reader makes room for this much.
    pub fn need(&self, buf: &[u8]) -> Result<usize, ProtocolError> {
        if buf.len() < MSG_HEADER_LEN {
            // Reject an unknown type as soon as its byte arrives.
            if let Some(&ty) = buf.first() {
                if MsgType::from_wire(ty).is_none() {
                    return Err(ProtocolError::UnknownType { offset: self.offset, ty });
                }
            }
            return Ok(MSG_HEADER_LEN);
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
            None if ty == MsgType::Report => {
                if len > MAX_REPORT_LEN {
                    return Err(ProtocolError::TooLarge {
                        offset: at + 4,
                        what: ty.name(),
                        len: len as u64,
                        max: MAX_REPORT_LEN as u64,
                    });
                }
            }
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
        Ok(MSG_HEADER_LEN + len)
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
        let msg = match MsgType::from_wire(buf[0]).expect("checked") {
            MsgType::StreamInfo => {
                let s = decode_stream_info(p, at)?;
                self.stream = Some(s);
                Message::StreamInfo(s)
            }
            MsgType::Frame => decode_frame(p, at, self.stream.expect("checked by check()"))?,
            MsgType::Ack => Message::Ack(Ack {
                seq: u64_at(p, 0),
                received_us: u64_at(p, 8),
                decoded_us: u64_at(p, 16),
                displayed_us: u64_at(p, 24),
            }),
            MsgType::Ping => Message::Ping(Ping { id: u64_at(p, 0), t1_us: u64_at(p, 8) }),
            MsgType::Pong => Message::Pong(Pong {
                id: u64_at(p, 0),
                t1_us: u64_at(p, 8),
                t2_us: u64_at(p, 16),
                t3_us: u64_at(p, 24),
            }),
            MsgType::SetQuality => decode_set_quality(p, at)?,
            MsgType::Report => decode_report(p, at)?,
            MsgType::QualityStep => decode_quality_step(p, at)?,
        };
        self.offset += total as u64;
        Ok(Some((msg, total)))
    }
}

/// The big-endian `u64` at `p[i..i + 8]`; the caller has checked the payload length.
fn u64_at(p: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(p[i..i + 8].try_into().expect("8 bytes"))
}

/// The big-endian `u32` at `p[i..i + 4]`; the caller has checked the payload length.
fn u32_at(p: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(p[i..i + 4].try_into().expect("4 bytes"))
}

/// The big-endian `u16` at `p[i..i + 2]`; the caller has checked the payload length.
fn u16_at(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes(p[i..i + 2].try_into().expect("2 bytes"))
}

/// Parses and validates a stream-info payload that starts at stream offset `at`.
fn decode_stream_info(p: &[u8], at: u64) -> Result<StreamInfo, ProtocolError> {
    let s = StreamInfo { width: u32_at(p, 0), height: u32_at(p, 4), fps_milli: u32_at(p, 8) };
    s.validate(at)?;
    Ok(s)
}

/// Parses a frame payload that starts at stream offset `at` and checks its header against
/// the payload length and the announced `stream`. The JPEG bytes are borrowed from `p`.
fn decode_frame(p: &[u8], at: u64, stream: StreamInfo) -> Result<Message<'_>, ProtocolError> {
    let h = FrameHeader {
        seq: u64_at(p, 0),
        capture_us: u64_at(p, 8),
        encode_start_us: u64_at(p, 16),
        encode_end_us: u64_at(p, 24),
        send_us: u64_at(p, 32),
        width: u16_at(p, 40),
        height: u16_at(p, 42),
        quality: p[44],
        subsampling: p[45],
        flags: p[46],
        jpeg_len: u32_at(p, 48),
    };
    if p[47] != 0 {
        return Err(ProtocolError::malformed(at + 47, format!("reserved byte {:#04x}, expected 0", p[47])));
    }
    let body = p.len() - FRAME_HEADER_LEN;
    if h.jpeg_len as usize != body {
        return Err(ProtocolError::malformed(
            at + 48,
            format!("jpeg length {} disagrees with the {body} bytes that follow the frame header", h.jpeg_len),
        ));
    }
    check_frame_fields(&h, at, stream)?;
    Ok(Message::Frame(h, &p[FRAME_HEADER_LEN..]))
}

/// Checks a frame header's size, quality and subsampling fields; `at` is the stream offset
/// of the frame payload.
fn check_frame_fields(h: &FrameHeader, at: u64, stream: StreamInfo) -> Result<(), ProtocolError> {
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
        return Err(ProtocolError::malformed(at + 45, format!("subsampling code {}, expected 0..=3", h.subsampling)));
    }
    Ok(())
}

/// Parses a set-quality payload that starts at stream offset `at`.
fn decode_set_quality(p: &[u8], at: u64) -> Result<Message<'_>, ProtocolError> {
    let q = p[0];
    if !(1..=100).contains(&q) || p[1..4] != [0, 0, 0] {
        return Err(ProtocolError::malformed(
            at,
            format!("set-quality payload {p:02x?}, expected a quality 1..=100 and three zero bytes"),
        ));
    }
    Ok(Message::SetQuality(q))
}

/// Checks that a report payload starting at stream offset `at` is UTF-8 text.
fn decode_report(p: &[u8], at: u64) -> Result<Message<'_>, ProtocolError> {
    if std::str::from_utf8(p).is_err() {
        return Err(ProtocolError::malformed(at, "report payload is not UTF-8 text"));
    }
    Ok(Message::Report(p))
}

/// Parses a quality-step payload that starts at stream offset `at`.
fn decode_quality_step(p: &[u8], at: u64) -> Result<Message<'_>, ProtocolError> {
    let n = p[0] as i8;
    if n == 0 || n.unsigned_abs() > MAX_QUALITY_STEP as u8 || p[1..4] != [0, 0, 0] {
        return Err(ProtocolError::malformed(
            at,
            format!(
                "quality-step payload {p:02x?}, expected a step of 1..={MAX_QUALITY_STEP} up or down (two's complement) and three zero bytes"
            ),
        ));
    }
    Ok(Message::QualityStep(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_header;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const INFO: StreamInfo = StreamInfo { width: 320, height: 240, fps_milli: 30_000 };

    fn enc(m: &Message<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v);
        v
    }

    /// A sample header with a flag set, so that the flags byte is checked too.
    fn header(seq: u64, info: StreamInfo, jpeg_len: usize) -> FrameHeader {
        FrameHeader { flags: FrameHeader::FLAG_PASSTHROUGH, ..sample_header(seq, info, jpeg_len) }
    }

    fn jpeg(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// A decoder that starts after a hello and has decoded `info`; its offset is 44.
    fn decoder_with(info: StreamInfo) -> Decoder {
        let mut d = Decoder::new(HELLO_LEN as u64);
        let bytes = enc(&Message::StreamInfo(info));
        let (m, used) = d.decode(&bytes).expect("valid stream info").expect("complete");
        assert_eq!(m, Message::StreamInfo(info));
        assert_eq!(used, 20);
        assert_eq!(d.offset, 44);
        d
    }

    fn malformed(e: ProtocolError) -> (u64, String) {
        match e {
            ProtocolError::Malformed { offset, what } => (offset, what),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// Decodes one whole message, checking that every strict prefix asks for more bytes
    /// and that the offset advances by exactly the message length.
    fn decode_one<'a>(d: &mut Decoder, bytes: &'a [u8]) -> Message<'a> {
        let start = d.offset;
        for cut in 0..bytes.len() {
            assert_eq!(d.check(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
            assert!(d.clone().decode(&bytes[..cut]).expect("a prefix is not an error").is_none());
        }
        assert_eq!(d.check(bytes), Ok(Some(bytes.len())));
        let (m, used) = d.decode(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(d.offset, start + bytes.len() as u64);
        m
    }

    /// Decodes messages until more bytes are needed or an error, checking the invariants
    /// that hold for any input. Returns how many messages were decoded.
    fn decode_all(d: &mut Decoder, mut buf: &[u8]) -> usize {
        let mut n = 0;
        loop {
            let before = d.offset;
            match d.decode(buf) {
                Ok(Some((_, used))) => {
                    assert!(used >= MSG_HEADER_LEN && used <= buf.len());
                    assert_eq!(d.offset, before + used as u64);
                    buf = &buf[used..];
                    n += 1;
                }
                Ok(None) => {
                    assert_eq!(d.offset, before);
                    return n;
                }
                Err(e) => {
                    let at = e.offset().expect("messages carry an offset");
                    assert!(at >= before && at < before + buf.len() as u64, "{e:?} points outside the input");
                    assert_eq!(d.offset, before);
                    return n;
                }
            }
        }
    }

    // ---- layout and round trips ----

    #[test]
    fn hello_layout_and_round_trip() {
        let id: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        for role in [Role::Sender, Role::Receiver] {
            let h = Hello::new(role, id);
            let mut b = Vec::new();
            h.encode(&mut b);
            assert_eq!(b.len(), HELLO_LEN);
            assert_eq!(&b[..4], b"FCST");
            assert_eq!(&b[4..6], &[0, 1]);
            assert_eq!(b[6], role as u8);
            assert_eq!(b[7], 0);
            assert_eq!(&b[8..], &id);
            for cut in 0..HELLO_LEN {
                assert_eq!(Hello::decode(&b[..cut], role), Ok(None), "prefix {cut}");
            }
            assert_eq!(Hello::decode(&b, role), Ok(Some(h)));
            // Bytes after the hello belong to the messages and are left alone.
            b.extend_from_slice(&[9, 9, 9]);
            assert_eq!(Hello::decode(&b, role), Ok(Some(h)));
        }
        assert_eq!(Role::Sender as u8, 1);
        assert_eq!(Role::Receiver as u8, 2);
    }

    #[test]
    fn message_header_and_fixed_payload_layouts() {
        let si =
            enc(&Message::StreamInfo(StreamInfo { width: 0x0102_0304, height: 0x0506_0708, fps_milli: 0x090a_0b0c }));
        assert_eq!(si, [1, 0, 0, 0, 0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

        let ack = enc(&Message::Ack(Ack { seq: 1, received_us: 2, decoded_us: 3, displayed_us: 4 }));
        let mut want = vec![3, 0, 0, 0, 0, 0, 0, 32];
        for v in 1u64..=4 {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(ack, want);

        let ping = enc(&Message::Ping(Ping { id: 0x1122_3344_5566_7788, t1_us: 5 }));
        let mut want = vec![4, 0, 0, 0, 0, 0, 0, 16, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        want.extend_from_slice(&5u64.to_be_bytes());
        assert_eq!(ping, want);

        let pong = enc(&Message::Pong(Pong { id: 9, t1_us: 8, t2_us: 7, t3_us: 6 }));
        let mut want = vec![5, 0, 0, 0, 0, 0, 0, 32];
        for v in [9u64, 8, 7, 6] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(pong, want);

        assert_eq!(enc(&Message::SetQuality(42)), [6, 0, 0, 0, 0, 0, 0, 4, 42, 0, 0, 0]);
        assert_eq!(enc(&Message::QualityStep(-1)), [8, 0, 0, 0, 0, 0, 0, 4, 0xff, 0, 0, 0]);
    }

    #[test]
    fn frame_layout() {
        let h = FrameHeader {
            seq: 0x0101_0101_0101_0101,
            capture_us: 0x0202_0202_0202_0202,
            encode_start_us: 0x0303_0303_0303_0303,
            encode_end_us: 0x0404_0404_0404_0404,
            send_us: 0x0505_0505_0505_0505,
            width: 0x0607,
            height: 0x0809,
            quality: 10,
            subsampling: 2,
            flags: 1,
            jpeg_len: 999, // replaced by the real length when encoding
        };
        let b = enc(&Message::Frame(h, &[0xff, 0xd8, 0xff]));
        assert_eq!(b.len(), MSG_HEADER_LEN + FRAME_HEADER_LEN + 3);
        assert_eq!(&b[..8], &[2, 0, 0, 0, 0, 0, 0, 55]);
        let p = &b[8..];
        for (i, v) in (1u8..=5).enumerate() {
            assert_eq!(&p[i * 8..i * 8 + 8], &[v; 8], "u64 field {i}");
        }
        assert_eq!(&p[40..44], &[6, 7, 8, 9]);
        assert_eq!(&p[44..48], &[10, 2, 1, 0]);
        assert_eq!(&p[48..52], &[0, 0, 0, 3]);
        assert_eq!(&p[52..], &[0xff, 0xd8, 0xff]);

        // encode_frame_head writes the same bytes as the first part of encode.
        let mut head = Vec::new();
        encode_frame_head(&FrameHeader { jpeg_len: 3, ..h }, &mut head);
        assert_eq!(head, b[..MSG_HEADER_LEN + FRAME_HEADER_LEN]);
    }

    #[test]
    fn every_message_type_round_trips() {
        let mut d = decoder_with(INFO);
        let j = jpeg(777);
        let empty: &[u8] = &[];
        let msgs = [
            Message::StreamInfo(StreamInfo { width: 320, height: 240, fps_milli: 0 }),
            Message::Frame(header(7, INFO, j.len()), &j),
            Message::Frame(header(8, INFO, 0), empty),
            Message::Ack(Ack { seq: 7, received_us: 10, decoded_us: 20, displayed_us: 30 }),
            Message::Ack(Ack::default()),
            Message::Ping(Ping { id: 1, t1_us: u64::MAX }),
            Message::Pong(Pong { id: 1, t1_us: u64::MAX, t2_us: 3, t3_us: 4 }),
            Message::SetQuality(1),
            Message::SetQuality(100),
            Message::QualityStep(1),
            Message::QualityStep(-MAX_QUALITY_STEP),
        ];
        for m in msgs {
            let b = enc(&m);
            assert_eq!(decode_one(&mut d, &b), m);
        }
        // All of them back to back decode the same way.
        let all: Vec<u8> = msgs.iter().flat_map(enc).collect();
        let mut d2 = decoder_with(INFO);
        let mut rest = &all[..];
        for m in msgs {
            let (got, used) = d2.decode(rest).unwrap().unwrap();
            assert_eq!(got, m);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(d2.offset, d.offset);
    }

    #[test]
    fn max_jpeg_len_pads_to_16() {
        let s = |width, height| StreamInfo { width, height, fps_milli: 0 };
        assert_eq!(s(1, 1).max_jpeg_len(), 16 * 16 * 6 + 2048);
        assert_eq!(s(16, 16).max_jpeg_len(), 16 * 16 * 6 + 2048);
        assert_eq!(s(17, 16).max_jpeg_len(), 32 * 16 * 6 + 2048);
        assert_eq!(s(1920, 1080).max_jpeg_len(), 1920 * 1088 * 6 + 2048);
        assert_eq!(s(7680, 4320).max_jpeg_len(), 7680 * 4320 * 6 + 2048);
    }

    // ---- hello errors ----

    #[test]
    fn bad_magic_rejected_at_the_first_wrong_byte() {
        for wrong_at in 0..4 {
            let mut b = MAGIC.to_vec();
            b[wrong_at] ^= 0x20;
            for len in 0..wrong_at + 1 {
                assert_eq!(Hello::decode(&b[..len], Role::Sender), Ok(None), "{wrong_at} {len}");
            }
            assert_eq!(
                Hello::decode(&b[..wrong_at + 1], Role::Sender),
                Err(ProtocolError::BadMagic { offset: 0, got: b[..wrong_at + 1].to_vec() })
            );
        }
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(Hello::decode(http, Role::Sender), Err(ProtocolError::BadMagic { offset: 0, .. })));
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let mut b = Vec::new();
        Hello::new(Role::Sender, [0; 16]).encode(&mut b);
        b[4..6].copy_from_slice(&2u16.to_be_bytes());
        // Rejected as soon as the version field is complete.
        assert_eq!(Hello::decode(&b[..5], Role::Sender), Ok(None));
        let e = Hello::decode(&b[..6], Role::Sender).unwrap_err();
        assert_eq!(e, ProtocolError::Version { ours: VERSION, theirs: 2 });
        let text = e.to_string();
        assert!(text.contains("version 1") && text.contains("version 2"), "{text}");
        assert_eq!(Hello::decode(&b, Role::Sender), Err(e));
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(Hello::decode(&b, Role::Sender), Err(ProtocolError::Version { ours: 1, theirs: 0 }));
    }

    #[test]
    fn wrong_role_unknown_role_and_flags() {
        let mut b = Vec::new();
        Hello::new(Role::Receiver, [7; 16]).encode(&mut b);
        assert_eq!(
            Hello::decode(&b, Role::Sender),
            Err(ProtocolError::WrongRole { offset: 6, expected: Role::Sender, got: Role::Receiver })
        );
        let e = Hello::decode(&b, Role::Sender).unwrap_err().to_string();
        assert!(e.contains("receiver") && e.contains("sender"), "{e}");
        // The role is judged only once the whole hello is there.
        assert_eq!(Hello::decode(&b[..HELLO_LEN - 1], Role::Sender), Ok(None));

        for r in [0u8, 3, 255] {
            let mut bad = b.clone();
            bad[6] = r;
            assert_eq!(malformed(Hello::decode(&bad, Role::Receiver).unwrap_err()).0, 6);
        }
        for f in [0x80u8, 0x02, 0x03, 0xff] {
            let mut bad = b.clone();
            bad[7] = f;
            assert_eq!(malformed(Hello::decode(&bad, Role::Receiver).unwrap_err()).0, 7);
        }
        // Flag 0x01 announces a key, and round-trips.
        let mut keyed = Vec::new();
        Hello::new(Role::Receiver, [7; 16]).keyed(true).encode(&mut keyed);
        assert_eq!(keyed[7], 0x01);
        assert_eq!(Hello::decode(&keyed, Role::Receiver), Ok(Some(Hello::new(Role::Receiver, [7; 16]).keyed(true))));
    }

    // ---- message errors ----

    #[test]
    fn unknown_message_type_rejected_from_its_first_byte() {
        for ty in [0u8, 9, 0x47, 255] {
            let d = decoder_with(INFO);
            let b = [ty, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4];
            for len in 1..=b.len() {
                assert_eq!(d.check(&b[..len]), Err(ProtocolError::UnknownType { offset: 44, ty }), "len {len}");
            }
            assert_eq!(d.check(&[]), Ok(None));
            let e = d.clone().decode(&b).unwrap_err();
            assert_eq!(e, ProtocolError::UnknownType { offset: 44, ty });
        }
    }

    #[test]
    fn report_messages_are_capped_and_utf8() {
        let mut d = Decoder::new(0);
        let mut b = Vec::new();
        Message::Report(br#"{"fps":30.0}"#).encode(&mut b);
        assert_eq!(d.decode(&b), Ok(Some((Message::Report(br#"{"fps":30.0}"#), b.len()))));
        let mut big = vec![MsgType::Report as u8, 0, 0, 0];
        big.extend_from_slice(&(MAX_REPORT_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(Decoder::new(0).check(&big), Err(ProtocolError::TooLarge { what: "report", .. })));
        let mut bad = Vec::new();
        Message::Report(&[0xff, 0xfe]).encode(&mut bad);
        assert!(matches!(Decoder::new(0).decode(&bad), Err(ProtocolError::Malformed { .. })));
    }

    #[test]
    fn nonzero_header_reserved_bytes_rejected() {
        for i in 1..4 {
            let mut b = enc(&Message::Ping(Ping::default()));
            b[i] = 1;
            let (offset, _) = malformed(decoder_with(INFO).decode(&b).unwrap_err());
            assert_eq!(offset, 45);
            // Also before the payload arrives.
            let (offset, _) = malformed(decoder_with(INFO).check(&b[..8]).unwrap_err());
            assert_eq!(offset, 45);
        }
    }

    #[test]
    fn fixed_size_messages_with_wrong_length_rejected() {
        let cases = [(1u8, 12u32), (3, 32), (4, 16), (5, 32), (6, 4)];
        for (ty, len) in cases {
            for wrong in [0, len - 1, len + 1, u32::MAX] {
                let mut b = vec![ty, 0, 0, 0];
                b.extend_from_slice(&wrong.to_be_bytes());
                let (offset, what) = malformed(decoder_with(INFO).check(&b).unwrap_err());
                assert_eq!(offset, 48, "type {ty}");
                assert!(what.contains(&format!("expected {len}")), "{what}");
            }
        }
    }

    #[test]
    fn frame_before_stream_info_rejected() {
        let mut d = Decoder::new(HELLO_LEN as u64);
        let b = enc(&Message::Frame(header(0, INFO, 4), &[1, 2, 3, 4]));
        assert_eq!(d.check(&b[..7]), Ok(None));
        let (offset, what) = malformed(d.check(&b[..8]).unwrap_err());
        assert_eq!(offset, 24);
        assert!(what.contains("stream-info"), "{what}");
        assert_eq!(malformed(d.decode(&b).unwrap_err()).0, 24);
    }

    #[test]
    fn frame_at_the_cap_is_accepted_and_one_over_is_too_large() {
        // 1x1 pads to 16x16: a cap of 52 + 3584 bytes.
        let info = StreamInfo { width: 1, height: 1, fps_milli: 0 };
        let max_jpeg = info.max_jpeg_len() as usize;
        let cap = (FRAME_HEADER_LEN + max_jpeg) as u64;

        let j = jpeg(max_jpeg);
        let b = enc(&Message::Frame(header(1, info, j.len()), &j));
        let mut d = decoder_with(info);
        let (m, used) = d.decode(&b).unwrap().unwrap();
        assert_eq!(m, Message::Frame(header(1, info, j.len()), &j));
        assert_eq!(used, b.len());

        let j = jpeg(max_jpeg + 1);
        let b = enc(&Message::Frame(header(2, info, j.len()), &j));
        let want = ProtocolError::TooLarge { offset: d.offset + 4, what: "frame", len: cap + 1, max: cap };
        // Known from the header alone, before the body is read.
        assert_eq!(d.check(&b[..8]), Err(want.clone()));
        assert_eq!(d.decode(&b), Err(want));
    }

    #[test]
    fn cap_of_an_8k_stream_is_judged_from_the_header() {
        let info = StreamInfo { width: 7680, height: 4320, fps_milli: 0 };
        let cap = FRAME_HEADER_LEN as u64 + info.max_jpeg_len();
        let d = decoder_with(info);
        let head = |len: u64| {
            let mut b = vec![2, 0, 0, 0];
            b.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            b
        };
        assert_eq!(d.check(&head(cap)), Ok(None));
        assert_eq!(
            d.check(&head(cap + 1)),
            Err(ProtocolError::TooLarge { offset: 48, what: "frame", len: cap + 1, max: cap })
        );
        assert!(matches!(d.check(&head(u64::from(u32::MAX))), Err(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn frame_shorter_than_its_header_rejected() {
        let d = decoder_with(INFO);
        for len in [0u32, 1, FRAME_HEADER_LEN as u32 - 1] {
            let mut b = vec![2, 0, 0, 0];
            b.extend_from_slice(&len.to_be_bytes());
            assert_eq!(malformed(d.check(&b).unwrap_err()).0, 48);
        }
    }

    #[test]
    fn frame_jpeg_len_must_match_message_length() {
        for claimed in [0u32, 9, 11, u32::MAX] {
            let mut b = enc(&Message::Frame(header(1, INFO, 10), &jpeg(10)));
            b[8 + 48..8 + 52].copy_from_slice(&claimed.to_be_bytes());
            let (offset, what) = malformed(decoder_with(INFO).decode(&b).unwrap_err());
            assert_eq!(offset, 44 + 8 + 48, "claimed {claimed}");
            assert!(what.contains("jpeg length"), "{what}");
        }
    }

    #[test]
    fn frame_size_must_match_the_stream() {
        for (w, h) in [(321u16, 240u16), (320, 239), (240, 320), (0, 0)] {
            let fh = FrameHeader { width: w, height: h, ..header(1, INFO, 3) };
            let b = enc(&Message::Frame(fh, &[1, 2, 3]));
            let (offset, what) = malformed(decoder_with(INFO).decode(&b).unwrap_err());
            assert_eq!(offset, 44 + 8 + 40);
            assert!(what.contains(&format!("{w}x{h}")) && what.contains("320x240"), "{what}");
        }
    }

    #[test]
    fn subsampling_wire_codes_are_tjsamp_and_round_trip() {
        let codes: Vec<u8> = Subsampling::ALL.iter().map(|s| s.to_wire()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
        for s in Subsampling::ALL {
            assert_eq!(Subsampling::from_wire(s.to_wire()), Some(s));
            assert_eq!(s.to_wire(), s as u8, "the TJSAMP discriminant and the wire code agree");
        }
        assert_eq!(Subsampling::from_wire(4), None);
    }

    #[test]
    fn frame_quality_subsampling_and_reserved_checked() {
        let base = header(1, INFO, 3);
        let cases = [
            (FrameHeader { quality: 101, ..base }, 44),
            (FrameHeader { quality: 255, ..base }, 44),
            (FrameHeader { subsampling: 4, ..base }, 45),
        ];
        for (fh, field) in cases {
            let b = enc(&Message::Frame(fh, &[1, 2, 3]));
            assert_eq!(malformed(decoder_with(INFO).decode(&b).unwrap_err()).0, 52 + field);
        }
        let mut b = enc(&Message::Frame(base, &[1, 2, 3]));
        b[8 + 47] = 1;
        assert_eq!(malformed(decoder_with(INFO).decode(&b).unwrap_err()).0, 52 + 47);
        // Quality 0 ("unknown") and every flag value are valid.
        let ok = FrameHeader { quality: 0, flags: 0xff, ..base };
        let b = enc(&Message::Frame(ok, &[1, 2, 3]));
        assert_eq!(decoder_with(INFO).decode(&b).unwrap().unwrap().0, Message::Frame(ok, &[1, 2, 3]));
    }

    #[test]
    fn stream_info_sizes_are_bounded() {
        let bad = [
            (0, 0),
            (0, 240),
            (320, 0),
            (MAX_DIMENSION + 1, 1),
            (1, MAX_DIMENSION + 1),
            (7680, 4321),
            (MAX_DIMENSION, MAX_DIMENSION),
            (u32::MAX, u32::MAX),
        ];
        for (width, height) in bad {
            let b = enc(&Message::StreamInfo(StreamInfo { width, height, fps_milli: 1 }));
            let mut d = decoder_with(INFO);
            let (offset, what) = malformed(d.decode(&b).unwrap_err());
            assert_eq!(offset, 52, "{width}x{height}");
            assert!(what.contains(&format!("{width}x{height}")), "{what}");
            assert_eq!(d.stream(), Some(INFO), "a rejected stream-info must not replace the stream");
        }
        for (width, height) in [(7680, 4320), (4320, 7680), (1, 1), (MAX_DIMENSION, 2025), (1, MAX_DIMENSION)] {
            let s = StreamInfo { width, height, fps_milli: 0 };
            let b = enc(&Message::StreamInfo(s));
            let mut d = Decoder::new(0);
            assert_eq!(d.decode(&b).unwrap().unwrap().0, Message::StreamInfo(s));
            assert_eq!(d.stream(), Some(s));
        }
    }

    #[test]
    fn set_quality_payload_checked() {
        for payload in [[0u8, 0, 0, 0], [101, 0, 0, 0], [50, 1, 0, 0], [50, 0, 0, 1]] {
            let mut b = vec![6, 0, 0, 0, 0, 0, 0, 4];
            b.extend_from_slice(&payload);
            assert_eq!(malformed(decoder_with(INFO).decode(&b).unwrap_err()).0, 52, "{payload:?}");
        }
    }

    #[test]
    fn quality_step_payload_checked() {
        for payload in [[0u8, 0, 0, 0], [11, 0, 0, 0], [0xf5, 0, 0, 0], [0x80, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1]] {
            let mut b = vec![8, 0, 0, 0, 0, 0, 0, 4];
            b.extend_from_slice(&payload);
            assert_eq!(malformed(decoder_with(INFO).decode(&b).unwrap_err()).0, 52, "{payload:?}");
        }
        for n in [-10i8, -1, 1, 10] {
            let b = enc(&Message::QualityStep(n));
            assert_eq!(decoder_with(INFO).decode(&b).unwrap(), Some((Message::QualityStep(n), 12)));
        }
    }

    #[test]
    fn a_new_stream_info_moves_the_size_and_the_cap() {
        let mut d = decoder_with(INFO);
        let small = StreamInfo { width: 16, height: 16, fps_milli: 0 };
        let b = enc(&Message::StreamInfo(small));
        decode_one(&mut d, &b);
        // A 320x240 frame is now the wrong size, and a frame over the small cap too large.
        let b = enc(&Message::Frame(header(1, INFO, 3), &[1, 2, 3]));
        assert_eq!(malformed(d.clone().decode(&b).unwrap_err()).0, d.offset + 8 + 40);
        let j = jpeg(small.max_jpeg_len() as usize + 1);
        let b = enc(&Message::Frame(header(1, small, j.len()), &j));
        assert!(matches!(d.check(&b), Err(ProtocolError::TooLarge { .. })));
    }

    // ---- properties ----

    fn frame_strategy() -> impl Strategy<Value = (FrameHeader, Vec<u8>)> {
        (
            any::<[u64; 5]>(),
            1..=4096u16,
            1..=4096u16,
            0..=100u8,
            0..=3u8,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..3000),
        )
            .prop_map(|(t, width, height, quality, subsampling, flags, jpeg)| {
                let h = FrameHeader {
                    seq: t[0],
                    capture_us: t[1],
                    encode_start_us: t[2],
                    encode_end_us: t[3],
                    send_us: t[4],
                    width,
                    height,
                    quality,
                    subsampling,
                    flags,
                    jpeg_len: jpeg.len() as u32,
                };
                (h, jpeg)
            })
    }

    fn stream_info_strategy() -> impl Strategy<Value = StreamInfo> {
        (1..=MAX_DIMENSION).prop_flat_map(|w| {
            let max_h = MAX_DIMENSION.min((MAX_PIXELS / u64::from(w)) as u32);
            (1..=max_h, any::<u32>()).prop_map(move |(height, fps_milli)| StreamInfo { width: w, height, fps_milli })
        })
    }

    /// A valid stream (after the hello) that the mutation property starts from.
    fn valid_stream() -> Vec<u8> {
        let info = StreamInfo { width: 64, height: 48, fps_milli: 25_000 };
        let mut b = Vec::new();
        Message::StreamInfo(info).encode(&mut b);
        for (seq, len) in [(1u64, 0usize), (2, 40), (3, 300)] {
            Message::Frame(header(seq, info, len), &jpeg(len)).encode(&mut b);
        }
        Message::Ack(Ack { seq: 3, received_us: 1, decoded_us: 2, displayed_us: 3 }).encode(&mut b);
        Message::Ping(Ping { id: 1, t1_us: 2 }).encode(&mut b);
        Message::Pong(Pong { id: 1, t1_us: 2, t2_us: 3, t3_us: 4 }).encode(&mut b);
        Message::SetQuality(60).encode(&mut b);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_frame_round_trips((h, j) in frame_strategy(), fps_milli in any::<u32>()) {
            let info = StreamInfo { width: h.width.into(), height: h.height.into(), fps_milli };
            let mut d = decoder_with(info);
            let b = enc(&Message::Frame(h, &j));
            prop_assert_eq!(b.len(), MSG_HEADER_LEN + FRAME_HEADER_LEN + j.len());
            let (m, used) = d.decode(&b).unwrap().unwrap();
            prop_assert_eq!(m, Message::Frame(h, &j));
            prop_assert_eq!(used, b.len());
        }

        #[test]
        fn prop_stream_info_round_trips(s in stream_info_strategy()) {
            let b = enc(&Message::StreamInfo(s));
            let mut d = Decoder::new(0);
            prop_assert_eq!(d.decode(&b).unwrap(), Some((Message::StreamInfo(s), 20)));
            prop_assert_eq!(d.stream(), Some(s));
        }

        #[test]
        fn prop_stream_info_out_of_range_rejected(width in any::<u32>(), height in any::<u32>()) {
            let valid = width >= 1 && height >= 1 && width <= MAX_DIMENSION && height <= MAX_DIMENSION
                && u64::from(width) * u64::from(height) <= MAX_PIXELS;
            let b = enc(&Message::StreamInfo(StreamInfo { width, height, fps_milli: 0 }));
            let r = Decoder::new(0).decode(&b);
            prop_assert_eq!(r.is_ok(), valid, "{:?}", r);
        }

        #[test]
        fn prop_ack_round_trips(v in any::<[u64; 4]>()) {
            let a = Ack { seq: v[0], received_us: v[1], decoded_us: v[2], displayed_us: v[3] };
            let b = enc(&Message::Ack(a));
            prop_assert_eq!(Decoder::new(0).decode(&b).unwrap(), Some((Message::Ack(a), 40)));
        }

        #[test]
        fn prop_ping_round_trips(id in any::<u64>(), t1_us in any::<u64>()) {
            let p = Ping { id, t1_us };
            let b = enc(&Message::Ping(p));
            prop_assert_eq!(Decoder::new(0).decode(&b).unwrap(), Some((Message::Ping(p), 24)));
        }

        #[test]
        fn prop_pong_round_trips(v in any::<[u64; 4]>()) {
            let p = Pong { id: v[0], t1_us: v[1], t2_us: v[2], t3_us: v[3] };
            let b = enc(&Message::Pong(p));
            prop_assert_eq!(Decoder::new(0).decode(&b).unwrap(), Some((Message::Pong(p), 40)));
        }

        #[test]
        fn prop_set_quality_round_trips(q in 1..=100u8) {
            let b = enc(&Message::SetQuality(q));
            prop_assert_eq!(Decoder::new(0).decode(&b).unwrap(), Some((Message::SetQuality(q), 12)));
        }

        #[test]
        fn prop_hello_round_trips(clock_id in any::<[u8; 16]>(), sender in any::<bool>()) {
            let role = if sender { Role::Sender } else { Role::Receiver };
            let h = Hello::new(role, clock_id);
            let mut b = Vec::new();
            h.encode(&mut b);
            prop_assert_eq!(Hello::decode(&b, role), Ok(Some(h)));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic_the_hello(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            for role in [Role::Sender, Role::Receiver] {
                if let Ok(Some(h)) = Hello::decode(&bytes, role) {
                    let mut again = Vec::new();
                    h.encode(&mut again);
                    prop_assert_eq!(&again[..], &bytes[..HELLO_LEN]);
                }
            }
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic_the_decoder(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            typed in any::<bool>(),
        ) {
            let mut bytes = bytes;
            // Half the cases start with a plausible header so parsing gets past the type.
            if typed && bytes.len() >= 8 {
                bytes[0] = bytes[0] % 6 + 1;
                bytes[1..4].fill(0);
                let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) % 4096;
                bytes[4..8].copy_from_slice(&len.to_be_bytes());
            }
            decode_all(&mut decoder_with(StreamInfo { width: 64, height: 48, fps_milli: 0 }), &bytes);
            decode_all(&mut Decoder::new(0), &bytes);
        }

        #[test]
        fn prop_mutated_streams_never_panic(edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6)) {
            let mut b = valid_stream();
            for (i, v) in &edits {
                let i = i.index(b.len());
                b[i] = *v;
            }
            let n = decode_all(&mut Decoder::new(HELLO_LEN as u64), &b);
            if edits.is_empty() {
                prop_assert_eq!(n, 8);
            }
        }
    }
}
