//! Pipes and FIFOs as sources (`--source -`, `--source FIFO`) with real producers: ffmpeg
//! and GStreamer write MJPEG, Y4M and raw frames into `framecast send`, and a viewer reads
//! the sender's `/stream.mjpg`. MJPEG must arrive byte for byte as the producer wrote it
//! (compared with the same producer's frames written one file each); Y4M and raw frames are
//! decoded and compared with ffmpeg's RGB of the same frames (PSNR). Every bad input of issue
//! #15 for pipes ends the sender with status 1 and a message naming what arrived and where.
//!
//! Tools (ffmpeg, gst-launch-1.0) come from `scripts/setup.sh --test-deps`; a missing one
//! skips its test loudly, or fails it under CI. Every process is killed at the end of its test.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::tools::{require_tools, tool_stdout};
use common::{connect_retry, free_port, scratch_dir, serial, Proc, BIN};
use framecast::codec::Decoder;
use framecast::testutil::{psnr, xrgb_to_rgb};

const EXIT: Duration = Duration::from_secs(30);
const FFMPEG: [(&str, &str); 1] = [("ffmpeg", "ffmpeg")];
const W: u32 = 320;
const H: u32 = 240;

/// ffmpeg's test source at 320x240, 30 fps: `-f lavfi -i testsrc2=...`.
fn testsrc() -> Vec<String> {
    ["-loglevel", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={W}x{H}:rate=30")].map(String::from).to_vec()
}

/// A producer process writing into the sender's standard input; killed when dropped.
struct Producer(Child);

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OS pipe: (read end, write end).
fn os_pipe() -> (OwnedFd, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// `producer | framecast send --source - --http 127.0.0.1:PORT ARGS`: returns the sender,
/// its HTTP port and the producer.
fn pipeline(producer: &mut Command, args: &[&str]) -> (Proc, u16, Producer) {
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut child = producer
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the producer");
    let out = child.stdout.take().expect("piped stdout");
    let mut full = vec!["send", "--source", "-", "--http", &http];
    full.extend_from_slice(args);
    let send = Proc::spawn_with("send", &full, |c| {
        c.stdin(Stdio::from(out));
    });
    (send, port, Producer(child))
}

/// One part of `/stream.mjpg`: the sender's frame number and the JPEG.
struct Part {
    seq: u64,
    jpeg: Vec<u8>,
}

/// GETs `/stream.mjpg` (retrying until the server is up) and reads it until the sender
/// closes it, at most `timeout`; returns the complete parts.
fn watch(port: u16, timeout: Duration) -> Vec<Part> {
    let mut s = connect_retry(port, timeout);
    s.write_all(format!("GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .expect("send the request");
    let bytes = common::read_until_closed(&mut s, timeout);
    parse_parts(&bytes)
}

/// The parts of a multipart response (its head skipped), by their Content-Length.
fn parse_parts(bytes: &[u8]) -> Vec<Part> {
    let find = |from: usize| bytes[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i);
    let Some(head_end) = find(0) else { return Vec::new() };
    let mut at = head_end + 4;
    let mut parts = Vec::new();
    while let Some(end) = find(at) {
        let head = String::from_utf8_lossy(&bytes[at..end]).into_owned();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        let (Some(len), Some(seq)) = (field("content-length"), field("x-framecast-seq")) else { break };
        let body = end + 4;
        if bytes.len() < body + len as usize {
            break;
        }
        parts.push(Part { seq, jpeg: bytes[body..body + len as usize].to_vec() });
        at = body + len as usize;
    }
    parts
}

/// The files a producer wrote one frame each (`%03d.jpg` from 1), in order.
fn frame_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Every part is the producer's frame of the same number, byte for byte; at least `min`
/// parts arrived.
fn assert_identical(parts: &[Part], frames: &[Vec<u8>], min: usize) {
    assert!(parts.len() >= min, "only {} parts reached the viewer, expected at least {min}", parts.len());
    for p in parts {
        let want =
            frames.get(p.seq as usize).unwrap_or_else(|| panic!("part {} beyond the {} frames", p.seq, frames.len()));
        assert!(
            p.jpeg == *want,
            "part {}: {} bytes differ from the producer's {} bytes",
            p.seq,
            p.jpeg.len(),
            want.len()
        );
    }
}

#[test]
fn mjpeg_from_ffmpeg_reaches_the_viewer_byte_for_byte() {
    if !require_tools("mjpeg_from_ffmpeg_reaches_the_viewer_byte_for_byte", &FFMPEG) {
        return;
    }
    let _g = serial();
    let dir = scratch_dir("pipe-ffmpeg");
    let n = "45";
    let pattern = dir.join("%03d.jpg");
    tool_stdout(Command::new("ffmpeg").args(testsrc()).args(["-frames:v", n, "-f", "image2"]).arg(&pattern), EXIT);
    let frames = frame_files(&dir);
    assert_eq!(frames.len(), 45);

    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.arg("-re").args(testsrc()).args(["-frames:v", n, "-f", "mjpeg", "-"]);
    let (mut send, port, _producer) = pipeline(&mut ffmpeg, &[]);
    let parts = watch(port, EXIT);
    send.expect_success(EXIT);
    assert_identical(&parts, &frames, 10);
    let log = send.stderr();
    assert!(log.contains("pipe source: MJPEG from standard input") && log.contains("width=320 height=240"), "{log}");
}

#[test]
fn mjpeg_from_gstreamer_reaches_the_viewer_byte_for_byte() {
    let test = "mjpeg_from_gstreamer_reaches_the_viewer_byte_for_byte";
    if !require_tools(test, &[("gst-launch-1.0", "gstreamer1.0-tools")]) {
        return;
    }
    let _g = serial();
    let dir = scratch_dir("pipe-gst");
    let caps = format!("video/x-raw,width={W},height={H},framerate=30/1");
    let gst = |live: &str, sink: &str| {
        let pipeline = format!("videotestsrc pattern=ball is-live={live} num-buffers=45 ! {caps} ! jpegenc ! {sink}");
        let mut c = Command::new("gst-launch-1.0");
        c.arg("-q").args(pipeline.split(' '));
        c
    };
    let files = format!("multifilesink location={}/%03d.jpg", dir.display());
    tool_stdout(&mut gst("false", &files), EXIT);
    let frames = frame_files(&dir);
    assert_eq!(frames.len(), 45);

    let (mut send, port, _producer) = pipeline(&mut gst("true", "fdsink fd=1"), &[]);
    let parts = watch(port, EXIT);
    send.expect_success(EXIT);
    assert_identical(&parts, &frames, 10);
}

/// ffmpeg's RGB of the test source's first `n` frames.
fn reference_rgb(n: usize) -> Vec<Vec<u8>> {
    let rgb = tool_stdout(
        Command::new("ffmpeg").args(testsrc()).args([
            "-frames:v",
            &n.to_string(),
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ]),
        EXIT,
    );
    rgb.chunks((W * H * 3) as usize).map(<[u8]>::to_vec).collect()
}

/// Decodes each part and returns the lowest PSNR against the reference frame of its number.
fn worst_psnr(parts: &[Part], reference: &[Vec<u8>]) -> f64 {
    let mut dec = Decoder::new().unwrap();
    let mut px = Vec::new();
    let mut worst = f64::INFINITY;
    for p in parts {
        dec.decode(&p.jpeg, W as usize, H as usize, &mut px).unwrap_or_else(|e| panic!("part {}: {e}", p.seq));
        let db = psnr(&xrgb_to_rgb(&px), &reference[p.seq as usize]);
        worst = worst.min(db);
    }
    worst
}

/// `ffmpeg -pix_fmt PIX -f FORMAT - | framecast send --source - ARGS`, 20 frames; the parts'
/// worst PSNR against ffmpeg's RGB. `full`: ffmpeg writes full-range YUV (else its default,
/// limited range, which framecast stretches by default).
fn pipe_psnr(ffmpeg_out: &[&str], args: &[&str], full: bool, reference: &[Vec<u8>]) -> (f64, usize) {
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.arg("-re").args(testsrc()).args(["-frames:v", "20"]);
    if full {
        ffmpeg.args(["-vf", "scale=out_range=full"]);
    }
    ffmpeg.args(ffmpeg_out).arg("-");
    let (mut send, port, _producer) = pipeline(&mut ffmpeg, args);
    let parts = watch(port, EXIT);
    send.expect_success(EXIT);
    assert!(parts.len() >= 5, "{:?}: only {} parts arrived", ffmpeg_out, parts.len());
    (worst_psnr(&parts, reference), parts.len())
}

#[test]
fn y4m_and_raw_frames_from_ffmpeg_match_the_source() {
    if !require_tools("y4m_and_raw_frames_from_ffmpeg_match_the_source", &FFMPEG) {
        return;
    }
    let _g = serial();
    let size = format!("{W}x{H}");
    // (ffmpeg output, framecast flags, ffmpeg writes full range, lowest PSNR in dB at quality
    // 90). 4:2:0 and 4:2:2 sources lose colour detail before framecast sees them (26.8 and
    // 27.2 dB measured on testsrc2); rgb24/bgr24 at 4:4:4 keep it (41.4 dB). Swapped chroma
    // (nv21 read as nv12) or channels (rgb24 read as bgr24) measured 4 dB, limited-range YUV
    // read as full (not stretched) 22 dB: ffmpeg's default YUV is limited range, which
    // `--input-range auto` stretches; nv12 is sent full range with `--input-range full`.
    let cases: [(&[&str], Vec<&str>, bool, f64); 6] = [
        (&["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"], vec![], false, 25.0),
        (&["-pix_fmt", "yuv420p", "-f", "rawvideo"], vec!["--input-format", "i420", "--size", &size], false, 25.0),
        (
            &["-pix_fmt", "nv12", "-f", "rawvideo"],
            vec!["--input-format", "nv12", "--size", &size, "--input-range", "full"],
            true,
            25.0,
        ),
        (
            &["-pix_fmt", "yuyv422", "-f", "rawvideo"],
            vec!["--input-format", "yuyv", "--size", &size, "--subsampling", "422"],
            false,
            25.0,
        ),
        (
            &["-pix_fmt", "rgb24", "-f", "rawvideo"],
            vec!["--input-format", "rgb24", "--size", &size, "--subsampling", "444"],
            false,
            38.0,
        ),
        (
            &["-pix_fmt", "bgr24", "-f", "rawvideo"],
            vec!["--input-format", "bgr24", "--size", &size, "--subsampling", "444"],
            false,
            38.0,
        ),
    ];
    let reference = reference_rgb(20);
    let mut report = Vec::new();
    for (out, mut args, full, min) in cases {
        args.extend(["--quality", "90"]);
        let (db, n) = pipe_psnr(out, &args, full, &reference);
        report.push(format!("{out:?} {args:?}: {n} frames, worst {db:.1} dB (want >= {min})"));
        assert!(db >= min, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

/// Runs `framecast send --source - ARGS` with `input` on its standard input through a pipe
/// (written by a thread, then closed); returns how it ended and what it logged.
fn send_with_input(input: Vec<u8>, args: &[&str]) -> (ExitStatus, String) {
    send_with_input_as("-", input, args)
}

/// [`send_with_input`] with `--source SOURCE` (e.g. `/dev/stdin`).
/// `framecast send --source SOURCE --http 127.0.0.1:0 ARGS` reading `stdin`, and a thread
/// that collects its log.
fn spawn_send(source: &str, args: &[&str], stdin: Stdio) -> (Child, thread::JoinHandle<String>) {
    let mut child = Command::new(BIN)
        .args(["send", "--source", source, "--http", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start framecast");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (child, reader)
}

/// Waits for `child` to exit, at most `limit` from `from`; kills it and panics, saying `what`,
/// if it does not.
fn wait_exit(child: &mut Child, from: Instant, limit: Duration, what: &str) -> ExitStatus {
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if from.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn send_with_input_as(source: &str, input: Vec<u8>, args: &[&str]) -> (ExitStatus, String) {
    let (read, mut write) = os_pipe();
    let (mut child, reader) = spawn_send(source, args, Stdio::from(read));
    let writer = thread::spawn(move || {
        // The sender may exit before reading everything (a broken pipe is fine).
        let _ = write.write_all(&input);
    });
    let status = wait_exit(&mut child, Instant::now(), EXIT, &format!("framecast {args:?}"));
    let _ = writer.join();
    let log = reader.join().unwrap_or_default();
    assert!(!log.contains("panicked"), "framecast {args:?} panicked:\n{log}");
    (status, log)
}

/// Asserts exit status 1 and that the log names each of `needles`.
fn assert_fails(input: Vec<u8>, args: &[&str], needles: &[&str]) {
    let (status, log) = send_with_input(input, args);
    assert_eq!(status.code(), Some(1), "framecast {args:?}: {status}\n{log}");
    for n in needles {
        assert!(log.contains(n), "framecast {args:?}: the log does not say {n:?}:\n{log}");
    }
}

/// A small real JPEG of `w`x`h` from framecast's encoder.
fn jpeg(w: u32, h: u32, seq: u64) -> Vec<u8> {
    framecast::testutil::pattern_jpeg(w, h, framecast::format::Subsampling::S420, 80, seq).unwrap()
}

#[test]
fn bad_mjpeg_on_stdin_ends_with_status_1_naming_what_and_where() {
    let _g = serial();
    let a = jpeg(64, 48, 0);
    // Garbage instead of video.
    assert_fails(
        b"hello, this is not video\n".repeat(10),
        &[],
        &["standard input", "expected MJPEG (FF D8) or Y4M ('YUV4MPEG2 ')", "found 68 65 6C 6C 6F", "--input-format"],
    );
    // gst-launch-1.0 without -q: its messages before the images.
    let gst = [b"Setting pipeline to PAUSED ...\n".to_vec(), a.clone()].concat();
    assert_fails(
        gst,
        &[],
        &["found 53 65 74 74 69 6E 67", "(gst-launch-1.0 prints that on standard output: give it -q)"],
    );
    // A JPEG cut off at the end of the input.
    let cut = [a.clone(), a.clone(), a[..a.len() / 2].to_vec()].concat();
    let at = format!("image 2 (byte {} of the input): input ended {} bytes into an image", 2 * a.len(), a.len() / 2);
    assert_fails(cut, &[], &["standard input", &at]);
    // Garbage between images.
    let between = [a.clone(), b"\r\n--frame\r\n".to_vec(), a.clone()].concat();
    let at = format!("image 1 (byte {} of the input)", a.len());
    assert_fails(
        between,
        &[],
        &[&at, "expected the next image (FF D8) right after the end of the last one, found 0D 0A 2D 2D"],
    );
    // An image with no end marker, growing past the cap --size sets (64x48: 4 bytes a pixel
    // + 64 KiB = 77824 bytes).
    let sos = a.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let endless = [&a[..sos + 14], &vec![0x55; 200_000][..]].concat();
    assert_fails(
        endless,
        &["--size", "64x48"],
        &["image 0 (byte 0 of the input)", "image longer than 77824 bytes without an end marker (FF D9)"],
    );
}

#[test]
fn bad_y4m_and_raw_on_stdin_end_with_status_1() {
    let _g = serial();
    // A Y4M header that lies: it says 32x16, the frames are 16x8.
    let mut y4m = b"YUV4MPEG2 W32 H16 F30:1 C420jpeg\n".to_vec();
    for i in 0..6u8 {
        y4m.extend_from_slice(b"FRAME\n");
        y4m.extend(vec![i; 16 * 8 * 3 / 2]);
    }
    assert_fails(
        y4m,
        &[],
        &["standard input", "expected a 'FRAME' line", "the header says 32x16 420: 768 bytes a frame"],
    );
    // Raw input that is not a whole number of frames.
    let frame = 16 * 8 * 3 / 2;
    assert_fails(
        vec![7; frame * 2 + frame / 2],
        &["--input-format", "i420", "--size", "16x8"],
        &["standard input", "input ended 96 bytes into frame 2, expected 192 bytes a frame (i420 16x8)"],
    );
    // Raw frames need --size.
    assert_fails(vec![0; 10], &["--input-format", "rgb24"], &["raw rgb24 frames need --size"]);
    // --loop on a pipe.
    assert_fails(jpeg(16, 16, 0), &["--loop"], &["--loop needs a regular file"]);
}

#[test]
fn stdin_ending_between_frames_ends_cleanly_and_size_is_only_a_cap_for_mjpeg() {
    let _g = serial();
    let input = [jpeg(64, 48, 0), jpeg(64, 48, 1)].concat();
    let (status, log) = send_with_input(input, &["--size", "640x480"]);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("source ended frames=2"), "{log}");
    assert!(log.contains("--size 640x480 does not scale MJPEG"), "{log}");
    // `--source /dev/stdin` is standard input too: its end ends the stream (it is not a FIFO
    // to reopen).
    let (status, log) = send_with_input_as("/dev/stdin", [jpeg(64, 48, 0), jpeg(64, 48, 1)].concat(), &[]);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("pipe source: MJPEG from /dev/stdin") && log.contains("source ended frames=2"), "{log}");
}

/// Writes `images` into the FIFO at `path` as one writer (waiting for a reader), then closes.
fn write_fifo(path: &Path, images: &[Vec<u8>]) {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut f = loop {
        // Non-blocking open fails (ENXIO) while no reader has the FIFO open.
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(f) => break f,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no reader opened the FIFO within 10 s: {e}"),
        }
    };
    // Back to blocking writes.
    // SAFETY: fcntl on our own descriptor with integer arguments.
    unsafe {
        use std::os::fd::AsRawFd;
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    for img in images {
        f.write_all(img).expect("write to the FIFO");
        thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn a_fifo_whose_writer_leaves_is_reopened_with_no_signal_meanwhile() {
    let _g = serial();
    let dir = scratch_dir("pipe-fifo");
    let fifo = dir.join("video.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let json = dir.join("send.json");
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut send = Proc::spawn(
        "send",
        &[
            "send",
            "--source",
            fifo.to_str().unwrap(),
            "--http",
            &http,
            "--duration",
            "20",
            "--stats-json",
            json.to_str().unwrap(),
        ],
    );
    let images: Vec<Vec<u8>> = (0..10).map(|i| jpeg(64, 48, i)).collect();
    write_fifo(&fifo, &images);
    assert!(send.wait_for_stderr("source lost", Duration::from_secs(10)), "{}", send.stderr());
    // The sender is not stuck in open(): it keeps sending no-signal cards while nobody writes.
    thread::sleep(Duration::from_millis(1200));
    write_fifo(&fifo, &images);
    // Lost again when the second writer leaves; then Ctrl-C ends the sender.
    assert!(send.wait_for_stderr_n("source lost", 2, Duration::from_secs(10)), "{}", send.stderr());
    send.signal(libc::SIGINT).unwrap();
    send.expect_success(EXIT);
    let log = send.stderr();
    assert!(log.contains("pipe source: MJPEG from") && log.contains("video.fifo"), "{log}");
    assert!(log.contains("the writer closed the FIFO after 10 frames"), "{log}");
    assert!(log.contains("source reopened; streaming resumes"), "{log}");
    let s = common::summary(&json);
    assert!(s.no_signal_frames >= 1, "no-signal frames: {}", s.no_signal_frames);
    assert!(s.captured.unwrap_or(0) >= 20, "captured {:?}", s.captured);
}

#[test]
fn mjpeg_changing_size_is_forwarded_at_its_new_size_and_the_viewer_copes() {
    let _g = serial();
    let dir = scratch_dir("pipe-resize");
    let frame_log = dir.join("frames.csv");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut recv = Proc::spawn(
        "recv",
        &["recv", "--listen", &addr, "--headless", "--once", "--frame-log", frame_log.to_str().unwrap()],
    );
    let (read, mut write) = os_pipe();
    let mut send = Proc::spawn_with("send", &["send", "--source", "-", "--connect", &addr, "--once"], |c| {
        c.stdin(Stdio::from(read));
    });
    // The first image opens the source; the rest follow once the viewer is connected.
    write.write_all(&jpeg(64, 48, 0)).unwrap();
    assert!(send.wait_for_stderr("connected to viewer", Duration::from_secs(10)), "{}", send.stderr());
    for i in 1..30 {
        let (w, h) = if i < 15 { (64, 48) } else { (32, 16) };
        write.write_all(&jpeg(w, h, i)).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    drop(write);
    send.expect_success(EXIT);
    recv.expect_success(EXIT);
    assert!(send.stderr().contains("pipe source: the image size changed"), "{}", send.stderr());
    let csv = std::fs::read_to_string(&frame_log).unwrap();
    let sizes: Vec<(u32, u32)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert!(sizes.contains(&(64, 48)) && sizes.contains(&(32, 16)), "the viewer showed sizes {sizes:?}");
    assert!(sizes.last() == Some(&(32, 16)), "the viewer showed sizes {sizes:?}");
}

/// Runs `framecast send --source - ARGS` on a pipe that gets `input` and then stays open and
/// silent (a producer that hangs); with `sigint_after`, sends SIGINT then. Returns how it
/// ended, its log, and how long it took (from the start, or from the SIGINT).
fn send_on_silent_stdin(input: &[u8], args: &[&str], sigint_after: Option<Duration>) -> (ExitStatus, String, Duration) {
    let (read, mut write) = os_pipe();
    write.write_all(input).expect("write the input");
    let (mut child, reader) = spawn_send("-", args, Stdio::from(read));
    let mut from = Instant::now();
    if let Some(after) = sigint_after {
        thread::sleep(after);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        from = Instant::now();
    }
    let what = format!("framecast {args:?} on a silent pipe");
    let status = wait_exit(&mut child, from, Duration::from_secs(10), &what);
    let took = from.elapsed();
    drop(write);
    (status, reader.join().unwrap_or_default(), took)
}

#[test]
fn a_silent_pipe_honours_duration_and_ctrl_c() {
    let _g = serial();
    // One image, then nothing: --duration 1 still ends the run, cleanly, with a summary.
    let (status, log, took) = send_on_silent_stdin(&jpeg(64, 48, 0), &["--duration", "1"], None);
    assert!(status.success(), "{status}\n{log}");
    assert!(took < Duration::from_secs(4), "took {took:?}\n{log}");
    assert!(log.contains("sender summary"), "{log}");
    // Nothing at all (the format is never recognised): Ctrl-C ends it at once, with status 0.
    let (status, log, took) = send_on_silent_stdin(&[], &[], Some(Duration::from_millis(500)));
    assert!(status.success(), "{status}\n{log}");
    assert!(took < Duration::from_secs(2), "took {took:?} after SIGINT\n{log}");
    assert!(log.contains("stopped before the source opened") && log.contains("sender summary"), "{log}");
}
