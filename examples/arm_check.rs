//! A single-threaded self-check of the code that matters on ARM, for running a cross-built
//! binary under qemu-user, where the test binaries cannot run (libtest starts a thread per
//! test, and a program that starts a thread hangs under qemu-user on the build machines).
//!
//! ```text
//! scripts/cross.sh aarch64 --check                    # builds this for aarch64, runs it under qemu
//! cargo run --release --example arm_check             # the same checks on this machine
//! ```
//!
//! It starts no thread: no tracing subscriber, no rayon, no codec worker threads; and it
//! checks that libjpeg-turbo started none either (the thread count in /proc/self/status is
//! the same at the end as at the start; under qemu-user it counts qemu's own threads too,
//! which is why it is compared rather than expected to be 1).
//!
//! Checks, each printed as one line:
//! - the test pattern encoded and decoded through libjpeg-turbo (its NEON code on ARM) in
//!   every subsampling at two qualities, with the PSNR against the pattern above a floor;
//! - every native protocol message (the hellos, StreamInfo, Frame with a real JPEG, Ack,
//!   Ping, Pong, SetQuality, Report, QualityStep) encoded and decoded back equal, whole and
//!   split at every byte;
//! - UDP datagrams (`net::udp::wire`): every outer and inner kind encoded and parsed back.
//!
//! Exit status 0 when every check passed, 1 otherwise. Prints the machine it ran on.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use framecast::capture::pattern::TestPattern;
use framecast::codec::{Decoder, Encoder, JpegBuf};
use framecast::format::Subsampling;
use framecast::net::proto::{self, Ack, FrameHeader, Hello, Message, Ping, Pong, Role, StreamInfo};
use framecast::net::udp::wire::{Datagram, Inner, Receipt};
use framecast::testutil::{pattern_frame, psnr, sample_header, xrgb_to_rgb};

/// The lowest PSNR accepted per (subsampling, quality): about 6 dB below what x86-64 (AVX2)
/// gives for frame 7 at 640x480 (47.7, 61.5, 47.6, 55.9, 47.7, 42.3 dB), since NEON's colour
/// conversion and DCT may round differently; a broken codec lands far lower.
const MIN_PSNR: [(Subsampling, u8, f64); 6] = [
    (Subsampling::S420, 75, 41.0),
    (Subsampling::S420, 95, 54.0),
    (Subsampling::S422, 75, 41.0),
    (Subsampling::S444, 90, 49.0),
    (Subsampling::Gray, 75, 41.0),
    (Subsampling::S444, 50, 36.0),
];
const SIZE: (u32, u32) = (640, 480);

type Check = Result<String, String>;
type CheckFn = Box<dyn Fn() -> Check>;

fn main() -> ExitCode {
    let threads_before = thread_count();
    println!(
        "arm_check: {} {} ({}), {} threads at start",
        std::env::consts::ARCH,
        std::env::consts::OS,
        framecast_version(),
        show(threads_before)
    );
    // A failing check may panic inside library code: that is a failed check, not a crash.
    panic::set_hook(Box::new(|_| {}));
    let checks: [(&str, CheckFn); 4] = [
        ("jpeg", Box::new(check_jpeg)),
        ("native protocol", Box::new(check_native)),
        ("udp wire", Box::new(check_udp)),
        ("threads", Box::new(move || check_threads(threads_before))),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in &checks {
        let res = panic::catch_unwind(AssertUnwindSafe(check)).unwrap_or_else(|p| Err(panic_text(&p)));
        match res {
            Ok(summary) => {
                passed += 1;
                println!("ok   {name}: {summary}");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn framecast_version() -> String {
    format!("framecast {}", env!("CARGO_PKG_VERSION"))
}

fn show(n: Option<u32>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    let text = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
    format!("panicked: {}", text.unwrap_or_else(|| "(no message)".into()))
}

/// The `Threads:` line of /proc/self/status (None where there is no procfs).
fn thread_count() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

fn check_threads(before: Option<u32>) -> Check {
    match (before, thread_count()) {
        (Some(b), Some(a)) if a == b => Ok(format!("{a} at the end, as at the start: libjpeg-turbo started none")),
        (Some(b), Some(a)) => Err(format!("{b} threads at the start, {a} at the end: something started a thread")),
        _ => Err("cannot read Threads: from /proc/self/status".into()),
    }
}

/// Encodes and decodes test-pattern frames, checking size and PSNR.
fn check_jpeg() -> Check {
    let (w, h) = SIZE;
    let mut out = JpegBuf::default();
    let mut px = Vec::new();
    let mut dec = Decoder::new().map_err(|e| format!("decoder: {e}"))?;
    let mut results = Vec::new();
    for (sub, quality, floor) in MIN_PSNR {
        let frame = pattern_frame(w, h, sub, 7);
        let mut enc = Encoder::new(quality, sub, false).map_err(|e| format!("encoder {sub} q{quality}: {e}"))?;
        enc.encode(&frame, &mut out).map_err(|e| format!("encode {sub} q{quality}: {e}"))?;
        let jpeg = out.as_slice();
        dec.decode(jpeg, w as usize, h as usize, &mut px).map_err(|e| format!("decode {sub} q{quality}: {e}"))?;
        let want = TestPattern::new(w, h, sub).render_rgb(7);
        let got = psnr(&xrgb_to_rgb(&px), &want);
        if got.is_nan() || got < floor {
            return Err(format!("{sub} q{quality}: PSNR {got:.2} dB, expected at least {floor} dB"));
        }
        results.push(format!("{sub} q{quality} {} B {got:.1} dB", jpeg.len()));
    }
    Ok(format!("{w}x{h}: {}", results.join(", ")))
}

/// Every message the native protocol has, in one direction or the other.
fn messages(jpeg: &[u8], info: StreamInfo) -> Vec<Message<'_>> {
    let header = FrameHeader { flags: FrameHeader::FLAG_PASSTHROUGH, ..sample_header(42, info, jpeg.len()) };
    vec![
        Message::StreamInfo(info),
        Message::Frame(header, jpeg),
        Message::Ack(Ack { seq: 42, received_us: 1, decoded_us: 2, displayed_us: u64::MAX }),
        Message::Ping(Ping { id: 7, t1_us: 123_456_789 }),
        Message::Pong(Pong { id: 7, t1_us: 1, t2_us: 2, t3_us: 3 }),
        Message::SetQuality(55),
        Message::Report(br#"{"fps":29.97}"#),
        Message::QualityStep(-proto::MAX_QUALITY_STEP),
        Message::QualityStep(3),
    ]
}

fn check_native() -> Check {
    for role in [Role::Sender, Role::Receiver] {
        let hello = Hello::new(role, *b"0123456789abcdef").keyed(role == Role::Sender);
        let mut buf = Vec::new();
        hello.encode(&mut buf);
        let back = Hello::decode(&buf, role).map_err(|e| format!("hello: {e}"))?;
        if back != Some(hello) {
            return Err(format!("hello {role:?}: decoded {back:?}, expected {hello:?}"));
        }
    }
    let (w, h) = SIZE;
    let info = StreamInfo { width: w, height: h, fps_milli: 30_000 };
    let jpeg = framecast::testutil::pattern_jpeg(w, h, Subsampling::S420, 75, 3).map_err(|e| e.to_string())?;
    let msgs = messages(&jpeg, info);
    let mut stream = Vec::new();
    for m in &msgs {
        m.encode(&mut stream);
    }
    let whole = decode_all(&stream, &[])?;
    if whole != msgs {
        return Err(format!("decoded {} messages that differ from the {} encoded", whole.len(), msgs.len()));
    }
    // Split at every byte of the messages before the frame's JPEG and the last 64 bytes: the
    // JPEG in between is copied, not parsed.
    let frame_body = 8 + 12 + 8 + proto::FRAME_HEADER_LEN;
    let cuts: Vec<usize> = (1..frame_body).chain(stream.len() - 64..stream.len()).collect();
    for &cut in &cuts {
        let split = decode_all(&stream, &[cut])?;
        if split != msgs {
            return Err(format!("split at byte {cut}: decoded messages differ from the encoded ones"));
        }
    }
    Ok(format!(
        "2 hellos and {} messages ({} bytes), whole and split at {} points",
        msgs.len(),
        stream.len(),
        cuts.len()
    ))
}

/// Decodes `stream` as it would arrive in pieces ending at `cuts`, returning every message.
fn decode_all<'a>(stream: &'a [u8], cuts: &[usize]) -> Result<Vec<Message<'a>>, String> {
    let mut dec = proto::Decoder::new(0);
    let mut msgs = Vec::new();
    let mut pos = 0;
    let ends = cuts.iter().copied().chain([stream.len()]);
    for end in ends {
        // The bytes available so far are stream[pos..end]; decode all complete messages.
        while let Some((m, used)) = dec.decode(&stream[pos..end]).map_err(|e| format!("at byte {pos}: {e}"))? {
            msgs.push(m);
            pos += used;
        }
    }
    if pos != stream.len() {
        return Err(format!("{} bytes left undecoded at the end", stream.len() - pos));
    }
    Ok(msgs)
}

fn check_udp() -> Check {
    let receipt = Receipt {
        highest_seq: 70_000,
        highest_age_us: 1_500,
        packets: 1_000,
        bytes: 1_200_000,
        lost: 3,
        recovered: 5,
        loss_bp: 42,
    };
    let rtp = [0x80u8, 26, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 1, 64, 30, 0, 0xff];
    let inners = vec![
        Inner::Media(&rtp),
        Inner::Message(Message::Ping(Ping { id: 1, t1_us: 2 })),
        Inner::Message(Message::QualityStep(-2)),
        Inner::Nack(vec![(65_530, 10), (3, 1)]),
        Inner::Receipt(receipt),
        Inner::Bye,
    ];
    let mut n = 0;
    for inner in &inners {
        let mut body = Vec::new();
        inner.encode(&mut body);
        let back = Inner::parse(&body).map_err(|e| format!("inner {inner:?}: {e}"))?;
        if &back != inner {
            return Err(format!("inner: parsed {back:?}, expected {inner:?}"));
        }
        let plain = Datagram::Plain(&body);
        roundtrip_datagram(plain, Role::Sender)?;
        n += 1;
    }
    let hello = Hello::new(Role::Receiver, [9; 16]);
    let tag_and_text = [0xa5u8; 40];
    for d in [
        Datagram::Hello { session: u64::MAX - 1, hello },
        Datagram::Handshake { session: 5, msg: &[1, 2, 3, 4] },
        Datagram::Sealed { nonce: 77, body: &tag_and_text },
    ] {
        roundtrip_datagram(d, Role::Receiver)?;
    }
    Ok(format!("{n} inner kinds in plain datagrams, and hello, handshake and sealed datagrams"))
}

fn roundtrip_datagram(d: Datagram<'_>, role: Role) -> Result<(), String> {
    let mut buf = Vec::new();
    d.encode(&mut buf);
    let back = Datagram::parse(&buf, role).map_err(|e| format!("datagram {d:?}: {e}"))?;
    if back != d {
        return Err(format!("datagram: parsed {back:?}, expected {d:?}"));
    }
    Ok(())
}
