//! Malformed input, table-driven: every case runs through the real parser (the hello and the
//! messages through `MessageReader` over a `Cursor`, JPEGs through `codec::Decoder` as the
//! receiver's decode thread calls it) and must give its expected error, variant and message
//! text, without a panic.
//!
//! The table in `docs/malformed-inputs.md` is generated from these cases, and
//! `the_doc_table_is_current` fails when it drifts. After changing a case or an error
//! message, regenerate it with:
//!
//! ```text
//! FRAMECAST_BLESS=1 cargo test --test malformed
//! ```

use std::io::Cursor;
use std::time::{Duration, Instant};

use framecast::codec::{CodecError, Decoder as JpegDecoder};
use framecast::format::Subsampling;
use framecast::net::io::{Event, MessageReader, NetError};
use framecast::net::proto::{
    Ack, FrameHeader, Hello, Message, Ping, Pong, ProtocolError, Role, StreamInfo, FRAME_HEADER_LEN, HELLO_LEN,
    MAX_REPORT_LEN, MSG_HEADER_LEN, VERSION,
};
use framecast::testutil::{pattern_jpeg, sample_header, READ_CHUNK};

/// The stream every message case starts with, after the hello: 64x48 at 25 fps.
const INFO: StreamInfo = StreamInfo { width: 64, height: 48, fps_milli: 25_000 };
/// Stream offset of the first message after hello and stream-info.
const FIRST: u64 = (HELLO_LEN + MSG_HEADER_LEN + 12) as u64;

// ---- building inputs ----

fn hello(role: Role) -> Vec<u8> {
    let mut b = Vec::new();
    Hello::new(role, [0x11; 16]).encode(&mut b);
    b
}

fn enc(m: &Message<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode(&mut b);
    b
}

/// A sender's hello and stream-info for `info`, then `rest`.
fn after_info(info: StreamInfo, rest: &[u8]) -> Vec<u8> {
    let mut b = hello(Role::Sender);
    Message::StreamInfo(info).encode(&mut b);
    b.extend_from_slice(rest);
    b
}

/// A message header with any type, flags and length.
fn header(ty: u8, flags: [u8; 3], len: u32) -> Vec<u8> {
    let mut b = vec![ty];
    b.extend_from_slice(&flags);
    b.extend_from_slice(&len.to_be_bytes());
    b
}

fn frame(info: StreamInfo, jpeg: &[u8]) -> Vec<u8> {
    enc(&Message::Frame(sample_header(7, info, jpeg.len()), jpeg))
}

/// A real JPEG of the test pattern, from framecast's encoder.
fn real_jpeg(w: u32, h: u32) -> Vec<u8> {
    pattern_jpeg(w, h, Subsampling::S420, 75, 1).expect("encode the test pattern")
}

/// The largest frame message (payload bytes) a stream allows.
fn frame_cap(info: StreamInfo) -> u64 {
    FRAME_HEADER_LEN as u64 + info.max_jpeg_len()
}

// ---- running inputs ----

/// What a byte stream gave through `MessageReader`: how many messages (the hello included)
/// and how it ended.
struct Outcome {
    messages: Vec<String>,
    end: Result<(), NetError>,
    capacity: usize,
}

/// Reads a receiver's incoming stream (a sender's hello, then messages) from a `Cursor`.
fn read(bytes: &[u8]) -> Outcome {
    read_as(bytes, Role::Sender)
}

fn read_as(bytes: &[u8], expect: Role) -> Outcome {
    let mut r = MessageReader::new(Cursor::new(bytes));
    let mut messages = Vec::new();
    match r.read_hello(expect, Duration::from_secs(1)) {
        Ok(h) => messages.push(format!("{h:?}")),
        Err(e) => return Outcome { messages, end: Err(e), capacity: r.buffer_capacity() },
    }
    loop {
        match r.next_event() {
            Ok(Event::Message(m)) => messages.push(format!("{m:?}")),
            Ok(Event::Eof) => return Outcome { messages, end: Ok(()), capacity: r.buffer_capacity() },
            Ok(Event::Idle) => panic!("a Cursor never times out"),
            Err(e) => return Outcome { messages, end: Err(e), capacity: r.buffer_capacity() },
        }
    }
}

/// The protocol error a stream ends with, after `ok` good messages (the hello counts).
fn protocol_error(bytes: &[u8], ok: usize) -> (ProtocolError, String) {
    let o = read(bytes);
    assert_eq!(o.messages.len(), ok, "messages before the error: {:?}", o.messages);
    match o.end {
        Err(e @ NetError::Protocol { .. }) => {
            let text = e.to_string();
            let NetError::Protocol { error, .. } = e else { unreachable!() };
            (error, text)
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// One row of the table in docs/malformed-inputs.md.
struct Row {
    input: String,
    error: String,
    message: String,
}

fn row(input: impl Into<String>, error: impl Into<String>, message: impl Into<String>) -> Row {
    Row { input: input.into(), error: error.into(), message: message.into() }
}

/// Runs `bytes`, asserts the exact protocol error and returns its row.
fn expect_protocol(input: &str, bytes: &[u8], ok: usize, want: ProtocolError) -> Row {
    let (got, text) = protocol_error(bytes, ok);
    assert_eq!(got, want, "{input}");
    row(input, variant(&want), text)
}

fn variant(e: &ProtocolError) -> String {
    let full = format!("{e:?}");
    let name = full.split([' ', '{', '(']).next().unwrap_or_default();
    format!("`ProtocolError::{name}`")
}

// ---- the cases ----

fn handshake_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let e = |input: &str, bytes: &[u8], want: ProtocolError| expect_protocol(input, bytes, 0, want);

    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    rows.push(e(
        "an HTTP request instead of a hello",
        http,
        ProtocolError::BadMagic { offset: 0, got: b"GET ".to_vec() },
    ));
    let mut b = hello(Role::Sender);
    b[3] = b'X';
    rows.push(e(
        "magic `FCSX` (last magic byte wrong)",
        &b,
        ProtocolError::BadMagic { offset: 0, got: b"FCSX".to_vec() },
    ));
    let tls = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    rows.push(e("a TLS ClientHello", &tls, ProtocolError::BadMagic { offset: 0, got: tls[..4].to_vec() }));
    for v in [VERSION + 1, 0, u16::MAX] {
        let mut b = hello(Role::Sender);
        b[4..6].copy_from_slice(&v.to_be_bytes());
        rows.push(e(&format!("version {v}"), &b, ProtocolError::Version { ours: VERSION, theirs: v }));
    }
    // Judged on the version field alone: a future hello of another size is rejected too.
    let mut b = b"FCST".to_vec();
    b.extend_from_slice(&2u16.to_be_bytes());
    rows.push(e("version 2, only 6 bytes sent", &b, ProtocolError::Version { ours: VERSION, theirs: 2 }));
    rows.push(e(
        "a receiver's hello where a sender's is expected",
        &hello(Role::Receiver),
        ProtocolError::WrongRole { offset: 6, expected: Role::Sender, got: Role::Receiver },
    ));
    for r in [0u8, 3, 255] {
        let mut b = hello(Role::Sender);
        b[6] = r;
        rows.push(e(
            &format!("role {r}"),
            &b,
            ProtocolError::Malformed { offset: 6, what: format!("role {r}, expected 1 or 2") },
        ));
    }
    let mut b = hello(Role::Sender);
    b[7] = 0x80;
    rows.push(e(
        "hello flags 0x80",
        &b,
        ProtocolError::Malformed { offset: 7, what: "hello flags 0x80, expected 0 or 0x01 (key required)".into() },
    ));

    // The connection closes inside the hello, at every length.
    let full = hello(Role::Sender);
    for cut in 0..HELLO_LEN {
        let o = read(&full[..cut]);
        assert!(o.messages.is_empty());
        match o.end {
            Err(NetError::ClosedInHandshake { have }) => assert_eq!(have, cut),
            other => panic!("hello cut at {cut}: expected ClosedInHandshake, got {other:?}"),
        }
    }
    let text = |cut: usize| read(&full[..cut]).end.unwrap_err().to_string();
    rows.push(row("closed after 0 of 24 hello bytes", "`NetError::ClosedInHandshake`", text(0)));
    rows.push(row(
        "closed after 1..=23 hello bytes (every length tried), e.g. 23",
        "`NetError::ClosedInHandshake`",
        text(23),
    ));

    // A sender reading its viewer: the viewer's hello is expected.
    let o = read_as(&hello(Role::Sender), Role::Receiver);
    let e = o.end.unwrap_err();
    assert!(matches!(e, NetError::Protocol { error: ProtocolError::WrongRole { .. }, .. }), "{e:?}");
    rows.push(row(
        "a sender's hello where a receiver's is expected (sender side)",
        "`ProtocolError::WrongRole`",
        e.to_string(),
    ));
    rows
}

fn header_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    // After hello and stream-info: 2 good messages.
    let e = |input: &str, rest: &[u8], want: ProtocolError| expect_protocol(input, &after_info(INFO, rest), 2, want);

    for ty in [0u8, 9, 0x47, 255] {
        rows.push(e(
            &format!("message type {ty} (only its first byte sent)"),
            &[ty],
            ProtocolError::UnknownType { offset: FIRST, ty },
        ));
    }
    for (i, flags) in [[1u8, 0, 0], [0, 1, 0], [0, 0, 0x80]].into_iter().enumerate() {
        let mut b = header(3, flags, 32);
        b.extend_from_slice(&[0; 32]);
        rows.push(e(
            &format!("ack with header byte {} set", i + 1),
            &b,
            ProtocolError::Malformed {
                offset: FIRST + 1,
                what: format!("flags/reserved bytes {flags:02x?}, expected zeros"),
            },
        ));
    }
    let fixed = [
        ("stream-info", 1u8, 12u32),
        ("ack", 3, 32),
        ("ping", 4, 16),
        ("pong", 5, 32),
        ("set-quality", 6, 4),
        ("quality-step", 8, 4),
    ];
    for (name, ty, len) in fixed {
        for wrong in [0, len - 1, len + 1, u32::MAX] {
            rows.push(e(
                &format!("{name} with length {wrong} (header only)"),
                &header(ty, [0; 3], wrong),
                ProtocolError::Malformed {
                    offset: FIRST + 4,
                    what: format!("{name} message length {wrong}, expected {len}"),
                },
            ));
        }
    }
    // No stream-info yet: the hello alone is good.
    let mut b = hello(Role::Sender);
    b.extend_from_slice(&frame(INFO, &[0xff, 0xd8]));
    rows.push(expect_protocol(
        "frame before any stream-info",
        &b,
        1,
        ProtocolError::Malformed { offset: HELLO_LEN as u64, what: "frame before any stream-info message".into() },
    ));
    for (w, h) in [(0u32, 48u32), (64, 0), (16385, 1), (1, 16385), (7681, 4320), (16384, 16384), (u32::MAX, u32::MAX)] {
        let b = enc(&Message::StreamInfo(StreamInfo { width: w, height: h, fps_milli: 0 }));
        rows.push(e(
            &format!("stream-info {w}x{h}"),
            &b,
            ProtocolError::Malformed {
                offset: FIRST + 8,
                what: format!("stream size {w}x{h}, expected 1..=16384 on each side and at most 33177600 pixels"),
            },
        ));
    }
    rows
}

fn frame_length_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let cap = frame_cap(INFO);
    assert_eq!(cap, 20_532, "64x48: 52 + 64*48*6 + 2048");

    // Lengths 0 and below the frame header.
    for len in [0u32, 1, FRAME_HEADER_LEN as u32 - 1] {
        rows.push(expect_protocol(
            &format!("frame length {len}"),
            &after_info(INFO, &header(2, [0; 3], len)),
            2,
            ProtocolError::Malformed {
                offset: FIRST + 4,
                what: format!("frame message length {len}, shorter than the 52-byte frame header"),
            },
        ));
    }
    // Exactly the frame header: an empty JPEG is a valid message (and a decode error later).
    let o = read(&after_info(INFO, &frame(INFO, &[])));
    o.end.unwrap();
    assert_eq!(o.messages.len(), 3);
    rows.push(row("frame length 52 (empty JPEG)", "accepted", "(a frame message; the empty JPEG fails to decode)"));

    // At the cap: accepted. One over, or 2^32-1: too large, from the header alone.
    let jpeg = vec![0xa5; cap as usize - FRAME_HEADER_LEN];
    let o = read(&after_info(INFO, &frame(INFO, &jpeg)));
    o.end.unwrap();
    assert_eq!(o.messages.len(), 3);
    assert!(o.messages[2].starts_with("Frame("), "{:?}", o.messages[2]);
    rows.push(row(format!("frame length {cap} (the cap for 64x48), all bytes sent"), "accepted", "(a frame message)"));
    for len in [cap + 1, u64::from(u32::MAX)] {
        // Only the header is sent: the error must not wait for (or reserve) the body.
        let b = after_info(INFO, &header(2, [0; 3], len as u32));
        let o = read(&b);
        assert!(o.capacity <= READ_CHUNK);
        rows.push(expect_protocol(
            &format!("frame length {len} (header only)"),
            &b,
            2,
            ProtocolError::TooLarge { offset: FIRST + 4, what: "frame", len, max: cap },
        ));
    }

    // The stream with the largest cap (16384x2025 pads to 16384x2032: 199 755 828 bytes): its
    // cap is judged from the header too, and a frame declared at the cap whose body never
    // comes costs one read chunk, not 190 MB.
    let big = StreamInfo { width: 16384, height: 2025, fps_milli: 0 };
    let big_cap = frame_cap(big);
    assert_eq!(big_cap, 199_755_828);
    let b = after_info(big, &header(2, [0; 3], big_cap as u32 + 1));
    rows.push(expect_protocol(
        &format!("frame length {} on a 16384x2025 stream (header only)", big_cap + 1),
        &b,
        2,
        ProtocolError::TooLarge { offset: FIRST + 4, what: "frame", len: big_cap + 1, max: big_cap },
    ));
    let mut b = after_info(big, &header(2, [0; 3], big_cap as u32));
    b.extend_from_slice(&[0; 100]);
    let o = read(&b);
    assert_eq!(o.messages.len(), 2);
    assert!(o.capacity <= READ_CHUNK, "a declared frame reserved {} bytes", o.capacity);
    let e = o.end.unwrap_err();
    match &e {
        NetError::Truncated { offset, have, need } => {
            assert_eq!((*offset, *have, need.as_str()), (FIRST, 108, (big_cap + 8).to_string().as_str()))
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    rows.push(row(
        format!("frame length {big_cap} (the cap) on a 16384x2025 stream, then 100 bytes and EOF"),
        "`NetError::Truncated` (buffer stays at 64 KiB)",
        e.to_string(),
    ));

    // Report: at most 64 KiB, and UTF-8.
    let json = vec![b' '; MAX_REPORT_LEN];
    let o = read(&after_info(INFO, &enc(&Message::Report(&json))));
    o.end.unwrap();
    assert_eq!(o.messages.len(), 3);
    rows.push(row(
        format!("report length {MAX_REPORT_LEN} (the cap), all bytes sent"),
        "accepted",
        "(a report message)",
    ));
    let len = MAX_REPORT_LEN as u64 + 1;
    rows.push(expect_protocol(
        &format!("report length {len} (header only)"),
        &after_info(INFO, &header(7, [0; 3], len as u32)),
        2,
        ProtocolError::TooLarge { offset: FIRST + 4, what: "report", len, max: MAX_REPORT_LEN as u64 },
    ));
    rows.push(expect_protocol(
        "report payload `{\\xff}` (not UTF-8)",
        &after_info(INFO, &enc(&Message::Report(b"{\xff}"))),
        2,
        ProtocolError::Malformed { offset: FIRST + 8, what: "report payload is not UTF-8 text".into() },
    ));
    rows
}

fn frame_field_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let at = FIRST + MSG_HEADER_LEN as u64; // the frame header's first byte
    let e = |input: &str, b: Vec<u8>, want: ProtocolError| expect_protocol(input, &after_info(INFO, &b), 2, want);
    let jpeg = [1u8, 2, 3, 4];

    let mut b = frame(INFO, &jpeg);
    b[MSG_HEADER_LEN + 47] = 1;
    rows.push(e(
        "frame reserved byte 47 = 1",
        b,
        ProtocolError::Malformed { offset: at + 47, what: "reserved byte 0x01, expected 0".into() },
    ));
    for claimed in [0u32, 3, 5, u32::MAX] {
        let mut b = frame(INFO, &jpeg);
        b[MSG_HEADER_LEN + 48..MSG_HEADER_LEN + 52].copy_from_slice(&claimed.to_be_bytes());
        rows.push(e(
            &format!("frame jpeg_len {claimed} with 4 JPEG bytes"),
            b,
            ProtocolError::Malformed {
                offset: at + 48,
                what: format!("jpeg length {claimed} disagrees with the 4 bytes that follow the frame header"),
            },
        ));
    }
    for (w, h) in [(65u16, 48u16), (48, 64), (0, 0), (u16::MAX, u16::MAX)] {
        let fh = FrameHeader { width: w, height: h, ..sample_header(7, INFO, jpeg.len()) };
        rows.push(e(
            &format!("frame header {w}x{h} on a 64x48 stream"),
            enc(&Message::Frame(fh, &jpeg)),
            ProtocolError::Malformed {
                offset: at + 40,
                what: format!("frame size {w}x{h} differs from the announced stream size 64x48"),
            },
        ));
    }
    for q in [101u8, 255] {
        let fh = FrameHeader { quality: q, ..sample_header(7, INFO, jpeg.len()) };
        rows.push(e(
            &format!("frame quality {q}"),
            enc(&Message::Frame(fh, &jpeg)),
            ProtocolError::Malformed { offset: at + 44, what: format!("quality {q}, expected 0..=100") },
        ));
    }
    for s in [4u8, 255] {
        let fh = FrameHeader { subsampling: s, ..sample_header(7, INFO, jpeg.len()) };
        rows.push(e(
            &format!("frame subsampling {s}"),
            enc(&Message::Frame(fh, &jpeg)),
            ProtocolError::Malformed { offset: at + 45, what: format!("subsampling code {s}, expected 0..=3") },
        ));
    }
    for payload in [[0u8, 0, 0, 0], [101, 0, 0, 0], [50, 1, 0, 0], [50, 0, 0, 1]] {
        let mut b = header(6, [0; 3], 4);
        b.extend_from_slice(&payload);
        rows.push(e(
            &format!("set-quality payload {payload:02x?}"),
            b,
            ProtocolError::Malformed {
                offset: at,
                what: format!("set-quality payload {payload:02x?}, expected a quality 1..=100 and three zero bytes"),
            },
        ));
    }
    rows
}

/// Every message type, cut at every length: the peer closing mid-message is `Truncated`
/// (never a clean EOF, never a panic), and cut at 0 it is a clean EOF.
fn truncation_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let real = real_jpeg(64, 48);
    let report = br#"{"schema":2,"side":"recv","fps":29.97}"#;
    let messages: [(&str, u64, Vec<u8>); 7] = [
        ("stream-info", HELLO_LEN as u64, enc(&Message::StreamInfo(INFO))),
        ("frame (real 64x48 JPEG)", FIRST, frame(INFO, &real)),
        ("ack", FIRST, enc(&Message::Ack(Ack { seq: 1, received_us: 2, decoded_us: 3, displayed_us: 4 }))),
        ("ping", FIRST, enc(&Message::Ping(Ping { id: 1, t1_us: 2 }))),
        ("pong", FIRST, enc(&Message::Pong(Pong { id: 1, t1_us: 2, t2_us: 3, t3_us: 4 }))),
        ("set-quality", FIRST, enc(&Message::SetQuality(50))),
        ("report", FIRST, enc(&Message::Report(report))),
    ];
    for (name, offset, msg) in &messages {
        let prefix = if *offset == HELLO_LEN as u64 { hello(Role::Sender) } else { after_info(INFO, &[]) };
        let good = if prefix.len() == HELLO_LEN { 1 } else { 2 }; // hello, plus stream-info when it was sent
        let mut example = None;
        for cut in 0..=msg.len() {
            let mut b = prefix.clone();
            b.extend_from_slice(&msg[..cut]);
            let o = read(&b);
            if cut == 0 || cut == msg.len() {
                assert!(o.end.is_ok(), "{name} cut at {cut}: {:?}", o.end);
                assert_eq!(o.messages.len(), good + usize::from(cut > 0));
                continue;
            }
            assert_eq!(o.messages.len(), good, "{name} cut at {cut}");
            let e = o.end.unwrap_err();
            match &e {
                NetError::Truncated { offset: o, have, need } => {
                    assert_eq!((*o, *have), (*offset, cut), "{name}");
                    let want = if cut < MSG_HEADER_LEN { MSG_HEADER_LEN } else { msg.len() };
                    assert_eq!(need, &want.to_string(), "{name} cut at {cut}");
                }
                other => panic!("{name} cut at {cut}: expected Truncated, got {other:?}"),
            }
            if cut == msg.len() - 1 {
                example = Some(e.to_string());
            }
        }
        rows.push(row(
            format!("{name} ({} bytes) cut at 1..={} bytes, e.g. {}", msg.len(), msg.len() - 1, msg.len() - 1),
            "`NetError::Truncated`",
            example.unwrap(),
        ));
    }
    rows.push(row("any stream closed between two messages", "none (`Event::Eof`)", "(a clean end)"));
    rows
}

/// A hand-made baseline JPEG header that claims `w`x`h`: SOI, DQT, SOF0 (three components,
/// 4:2:0), DHT-less SOS and EOI. Enough for libjpeg-turbo to read the header, nothing more.
fn jpeg_header_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8];
    b.extend_from_slice(&[0xff, 0xdb, 0x00, 0x43, 0x00]);
    b.extend_from_slice(&[1; 64]);
    b.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08]);
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&[0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    b.extend_from_slice(&[0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00]);
    b.extend_from_slice(&[0x00; 16]);
    b.extend_from_slice(&[0xff, 0xd9]);
    b
}

/// A real JPEG with the SOF0 dimensions patched.
fn patch_sof(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    let sof = b.windows(2).position(|m| m == [0xff, 0xc0]).expect("a baseline SOF0 marker");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// Peak resident memory of this process, in bytes (Linux), to show that a JPEG claiming a
/// huge size was rejected without allocating for it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// JPEGs carried in well-formed frame messages, decoded as the receiver does: with the
/// frame header's size. The protocol accepts every one of these frames; the decoder rejects
/// the JPEG, which costs one frame, not the connection.
fn jpeg_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let good = real_jpeg(64, 48);
    let (r, px) = decode_in_frame(&mut JpegDecoder::new().unwrap(), &good);
    r.unwrap();
    assert_eq!(px.len(), 64 * 48);

    let other = real_jpeg(32, 32);
    let (r, px) = decode_in_frame(&mut JpegDecoder::new().unwrap(), &other);
    let e = r.unwrap_err();
    assert!(matches!(e, CodecError::SizeMismatch { got_w: 32, got_h: 32, want_w: 64, want_h: 48 }), "{e:?}");
    assert_eq!(px.capacity(), 0, "nothing decoded");
    rows.push(row("a real 32x32 JPEG in a 64x48 frame", "`CodecError::SizeMismatch`", e.to_string()));

    // Decompression bombs: the size is judged from the header, before anything is allocated.
    let before = peak_rss();
    let started = Instant::now();
    for (input, jpeg) in bombs(&good) {
        let (r, px) = decode_in_frame(&mut JpegDecoder::new().unwrap(), &jpeg);
        let e = r.unwrap_err();
        let kind = match &e {
            CodecError::SizeMismatch { got_w, got_h, .. } => {
                assert!((*got_w, *got_h) != (64, 48));
                "`CodecError::SizeMismatch`"
            }
            CodecError::Turbo(t) if t.to_string().contains("Maximum supported image dimension") => {
                "`CodecError::Turbo`"
            }
            other => panic!("{input}: expected SizeMismatch or the dimension limit, got {other:?}"),
        };
        assert_eq!(px.capacity(), 0, "{input}: the output buffer was allocated");
        rows.push(row(input, kind, e.to_string()));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "rejecting the bombs took {:?}", started.elapsed());
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        // 65500 x 65500 x 4 bytes would be 16 GiB.
        assert!(after - before < 64 << 20, "peak RSS grew by {} bytes", after - before);
    }

    // Not JPEGs, broken JPEGs and JPEGs libjpeg-turbo will not take: each is an error.
    for (input, jpeg) in broken_jpegs(&good) {
        let (r, _) = decode_in_frame(&mut JpegDecoder::new().unwrap(), &jpeg);
        let e = r.expect_err(input);
        let kind = match e {
            CodecError::Turbo(_) => "`CodecError::Turbo`",
            CodecError::SizeMismatch { .. } => "`CodecError::SizeMismatch`",
            other => panic!("{input}: {other:?}"),
        };
        rows.push(row(input, kind, e.to_string()));
    }
    rows
}

/// Sends `jpeg` in a well-formed 64x48 frame through the reader, then decodes it as the
/// receiver does, with the frame header's size.
fn decode_in_frame(dec: &mut JpegDecoder, jpeg: &[u8]) -> (Result<(), CodecError>, Vec<u32>) {
    let o = read(&after_info(INFO, &frame(INFO, jpeg)));
    o.end.unwrap();
    assert_eq!(o.messages.len(), 3, "the frame is well-formed");
    let mut px = Vec::new();
    let r = dec.decode(jpeg, INFO.width as usize, INFO.height as usize, &mut px);
    (r, px)
}

/// JPEGs that claim a size other than 64x48. libjpeg-turbo itself refuses sides over 65500
/// (`JPEG_MAX_DIMENSION`) while reading the header; up to that, the size check against the
/// frame header rejects them.
fn bombs(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a hand-made JPEG header claiming 65535x65535 (SOI, DQT, SOF0, SOS, EOI)", jpeg_header_claiming(65535, 65535)),
        ("a hand-made JPEG header claiming 65500x65500", jpeg_header_claiming(65500, 65500)),
        ("a real 64x48 JPEG with its SOF0 patched to 65535x65535", patch_sof(good, 65535, 65535)),
        ("a real 64x48 JPEG with its SOF0 patched to 65500x65500", patch_sof(good, 65500, 65500)),
        ("a real 64x48 JPEG with its SOF0 patched to 64x49", patch_sof(good, 64, 49)),
    ]
}

fn broken_jpegs(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut zero_height = good.to_vec();
    let sof = zero_height.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    zero_height[sof + 5..sof + 7].copy_from_slice(&0u16.to_be_bytes());
    vec![
        ("`definitely not a jpeg` (21 ASCII bytes)", b"definitely not a jpeg".to_vec()),
        ("an empty JPEG (0 bytes)", Vec::new()),
        ("SOI then EOI only (`ff d8 ff d9`)", vec![0xff, 0xd8, 0xff, 0xd9]),
        ("the first 100 bytes of a real 64x48 JPEG", good[..100].to_vec()),
        ("a real 64x48 JPEG cut in half", good[..good.len() / 2].to_vec()),
        ("a real 64x48 JPEG with its SOF0 height set to 0", zero_height),
        (
            "a hand-made header claiming 64x48 with no Huffman tables and 16 zero bytes of scan",
            jpeg_header_claiming(64, 48),
        ),
        ("SOI, then an SOF0 marker of length 0 (`ff d8 ff c0 00 00`)", vec![0xff, 0xd8, 0xff, 0xc0, 0x00, 0x00]),
        (
            "16 bytes found by the `jpeg` fuzz target (`ff d8 ff 00 47 11 00 42 fb ff ff 11 00 00 00 00`)",
            vec![0xff, 0xd8, 0xff, 0x00, 0x47, 0x11, 0x00, 0x42, 0xfb, 0xff, 0xff, 0x11, 0x00, 0x00, 0x00, 0x00],
        ),
    ]
}

/// The receiver's decode thread keeps one decoder for the whole run, so a bad frame must
/// not break the frames after it: after each bad JPEG, the same decoder decodes good ones.
///
/// libjpeg-turbo 3.1's `tj3DecompressHeader()` returns on an error without
/// `jpeg_abort_decompress()`, so a JPEG that fails inside its header (after the SOI) leaves
/// the handle mid-header, and every later JPEG failed ("two SOI markers", "Bogus marker
/// length", ...) until `codec::Decoder` learnt to replace the handle. See
/// docs/malformed-inputs.md, "Findings".
#[test]
fn the_decoder_recovers_after_each_bad_jpeg() {
    let good = real_jpeg(64, 48);
    let mut failures = Vec::new();
    for (input, jpeg) in bombs(&good).into_iter().chain(broken_jpegs(&good)) {
        let mut dec = JpegDecoder::new().unwrap();
        let (bad, _) = decode_in_frame(&mut dec, &jpeg);
        let bad = bad.unwrap_err();
        let results: Vec<_> = (0..3).map(|_| decode_in_frame(&mut dec, &good)).collect();
        let failed: Vec<String> = results.iter().filter_map(|(r, _)| r.as_ref().err().map(|e| e.to_string())).collect();
        if !failed.is_empty() {
            failures.push(format!("after {input} ({bad}): {} of 3 good frames failed: {}", failed.len(), failed[0]));
        }
    }
    assert!(failures.is_empty(), "a good frame failed to decode:\n{}", failures.join("\n"));
}

// ---- the tests ----

#[test]
fn handshake_errors() {
    handshake_rows();
}

#[test]
fn message_header_errors() {
    header_rows();
}

#[test]
fn frame_and_report_lengths_at_and_over_the_cap() {
    frame_length_rows();
}

#[test]
fn frame_and_set_quality_field_errors() {
    frame_field_rows();
}

#[test]
fn every_message_truncated_at_every_length() {
    truncation_rows();
}

#[test]
fn bad_jpegs_and_decompression_bombs() {
    jpeg_rows();
}

/// 100 000 acks and 100 000 pings, interleaved, through one reader: every one arrives, and
/// the reader's buffer stays at one 64 KiB chunk however long the stream.
#[test]
fn a_flood_of_acks_and_pings_does_not_grow_the_buffer() {
    const N: u64 = 100_000;
    let mut b = hello(Role::Receiver);
    for i in 0..N {
        Message::Ack(Ack { seq: i, received_us: i + 1, decoded_us: i + 2, displayed_us: i + 3 }).encode(&mut b);
        Message::Ping(Ping { id: i, t1_us: i }).encode(&mut b);
    }
    assert_eq!(b.len(), HELLO_LEN + N as usize * (40 + 24));
    let mut r = MessageReader::new(Cursor::new(&b[..]));
    r.read_hello(Role::Receiver, Duration::from_secs(1)).unwrap();
    let (mut acks, mut pings, mut max_capacity) = (0u64, 0u64, 0usize);
    loop {
        match r.next_event().unwrap() {
            Event::Message(Message::Ack(a)) => {
                assert_eq!(a.seq, acks);
                acks += 1;
            }
            Event::Message(Message::Ping(p)) => {
                assert_eq!(p.id, pings);
                pings += 1;
            }
            Event::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
        max_capacity = max_capacity.max(r.buffer_capacity());
    }
    assert_eq!((acks, pings), (N, N));
    assert!(max_capacity <= READ_CHUNK, "the buffer grew to {max_capacity} bytes");
}

// ---- the doc table ----

const DOC: &str = "docs/malformed-inputs.md";
const BEGIN: &str = "<!-- BEGIN GENERATED by tests/malformed.rs: do not edit by hand -->";
const END: &str = "<!-- END GENERATED -->";

fn render(sections: &[(&str, Vec<Row>)]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    for (title, rows) in sections {
        out.push_str(&format!("\n#### {title}\n\n| Input | Error | Message |\n|---|---|---|\n"));
        for r in rows {
            out.push_str(&format!("| {} | {} | `{}` |\n", cell(&r.input), r.error, cell(&r.message)));
        }
    }
    out
}

/// The table in docs/malformed-inputs.md is exactly what these cases give.
#[test]
fn the_doc_table_is_current() {
    let sections = [
        ("Handshake (the peer's hello)", handshake_rows()),
        ("Message headers and stream-info", header_rows()),
        ("Lengths at and over the caps", frame_length_rows()),
        ("Frame header fields and set-quality", frame_field_rows()),
        ("Truncation (the peer closes mid-message)", truncation_rows()),
        ("JPEGs inside well-formed frames (`codec::Decoder`, declared size 64x48)", jpeg_rows()),
    ];
    let table = render(&sections);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{DOC} has no generated block ({BEGIN} ... {END})");
    };
    let current = &doc[b + BEGIN.len()..e];
    let want = format!("{table}\n");
    if current == want {
        return;
    }
    if std::env::var_os("FRAMECAST_BLESS").is_some() {
        let updated = format!("{}{BEGIN}{want}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "{DOC} is out of date with tests/malformed.rs; regenerate it with \
         `FRAMECAST_BLESS=1 cargo test --test malformed`\n\nwanted:\n{want}"
    );
}
