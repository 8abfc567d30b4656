//! A real minifb window under Xvfb: runs `framecast demo`, takes a screenshot of the virtual
//! screen and checks the test pattern's colour bars where the window is.
//!
//! Needs `Xvfb` (Debian: xvfb), `xwd` (x11-apps), `xwininfo` (x11-utils) and ImageMagick's
//! `convert` or `magick` (imagemagick); `scripts/setup.sh --test-deps` installs them. Without
//! them the test prints that it is SKIPPED and why, unless `CI` is set: CI must run it for
//! real, so there it fails (`common::tools::require_tools`).
//!
//! The screenshot is kept as `target/window-test.png` for a look by eye.
//!
//! X11 only: on macOS and Windows minifb draws with the native toolkit, and this file is empty.

#![cfg(all(unix, not(target_os = "macos")))]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::tools::{on_path, require_tools, tool_stdout};
use common::{records_of, scratch_dir, Proc};
use framecast::capture::pattern::BARS;
use framecast::stats::RecordType;

/// The frame size asked of the demo; the window opens at the first frame's size.
const SIZE: (usize, usize) = (640, 480);
/// How long the demo streams, in seconds.
const DEMO_SECS: u64 = 6;
/// When the first screenshot is taken, counted from the demo's start.
const SETTLE: Duration = Duration::from_millis(2500);
/// Largest difference allowed per channel between a bar's colour and the screenshot (JPEG
/// quality 75 with 4:2:0 chroma changes the bar centres by a few units at most).
const TOLERANCE: u8 = 40;

/// Xvfb, stopped (SIGTERM, so that it removes its lock file and socket; then SIGKILL) and
/// reaped when dropped, whatever happened in between.
struct Xvfb(Option<Child>);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SIGTERM first so that Xvfb removes its lock file and socket.
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of a child that has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// ImageMagick's command: `convert` (version 6, and 7's compatibility name) or `magick` (7).
fn imagemagick() -> &'static str {
    if on_path("convert") || !on_path("magick") {
        "convert"
    } else {
        "magick"
    }
}

/// How long a helper tool (xwininfo, xwd, ImageMagick) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts Xvfb on a free display (it picks one itself and reports it through `-displayfd`)
/// and waits until its socket exists. Returns the guard and the display number.
fn start_xvfb(log: &Path) -> (Xvfb, u32) {
    let log_file = std::fs::File::create(log).expect("cannot create the Xvfb log file");
    let child = Command::new("Xvfb")
        // -wr: a white root window, so that a missing or misplaced window cannot pass for the
        // black bar.
        .args(["-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-wr"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("cannot start Xvfb");
    let mut xvfb = Xvfb(Some(child));
    let stdout = xvfb.0.as_mut().and_then(|c| c.stdout.take()).expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let xvfb_log = || std::fs::read_to_string(log).unwrap_or_default();
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("Xvfb did not report a display within 20 s; its log:\n{}", xvfb_log()));
    let display: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Xvfb reported display {line:?}, not a number; its log:\n{}", xvfb_log()));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "Xvfb :{display} has no socket {}; its log:\n{}",
            socket.display(),
            xvfb_log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    (xvfb, display)
}

/// A top-level window: id, title, and its absolute geometry on the screen.
#[derive(Debug)]
struct Win {
    id: String,
    title: String,
    x: usize,
    y: usize,
    width: usize,
    height: usize,
    viewable: bool,
}

/// Finds the window whose title starts with "framecast" (the title carries live stats after
/// the first second: "framecast - 30.0 fps, ...").
fn find_window(display: &str) -> Option<Win> {
    let tree = tool_stdout(Command::new("xwininfo").args(["-display", display, "-root", "-tree"]), TOOL_TIMEOUT);
    let tree = String::from_utf8_lossy(&tree);
    let line = tree.lines().find(|l| l.contains("\"framecast"))?;
    let mut parts = line.trim().splitn(2, ' ');
    let id = parts.next()?.to_string();
    let rest = parts.next()?;
    let title = rest.split('"').nth(1)?.to_string();
    let info = tool_stdout(Command::new("xwininfo").args(["-display", display, "-id", &id]), TOOL_TIMEOUT);
    let info = String::from_utf8_lossy(&info);
    let field = |name: &str| -> Option<usize> {
        info.lines().find_map(|l| l.trim().strip_prefix(name)).and_then(|v| v.trim().parse().ok())
    };
    Some(Win {
        x: field("Absolute upper-left X:")?,
        y: field("Absolute upper-left Y:")?,
        width: field("Width:")?,
        height: field("Height:")?,
        viewable: info.contains("Map State: IsViewable"),
        id,
        title,
    })
}

/// Starts `framecast demo ARGS` on `display` (":N").
fn start_demo(display: &str, args: &[&str]) -> Proc {
    let args: Vec<&str> = ["demo"].into_iter().chain(args.iter().copied()).collect();
    Proc::spawn_with("demo", &args, |cmd| {
        cmd.env("DISPLAY", display).env_remove("WAYLAND_DISPLAY");
    })
}

/// Takes a screenshot of the whole screen: (width, height, RGB bytes). Also saves it as
/// `png` (best effort).
fn screenshot(display: &str, xwd_path: &Path, png: &Path) -> (usize, usize, Vec<u8>) {
    let xwd = tool_stdout(Command::new("xwd").args(["-root", "-silent", "-display", display]), TOOL_TIMEOUT);
    std::fs::write(xwd_path, xwd).expect("cannot write the xwd file");
    let xwd_arg = format!("xwd:{}", xwd_path.display());
    let ppm = tool_stdout(Command::new(imagemagick()).args([&xwd_arg, "-strip", "-depth", "8", "ppm:-"]), TOOL_TIMEOUT);
    let _ = Command::new(imagemagick()).arg(&xwd_arg).arg(png).stdin(Stdio::null()).status();
    let parsed = framecast::view::read_ppm(&ppm).map(|(w, h, rgb)| (w, h, rgb.to_vec()));
    parsed.unwrap_or_else(|| {
        panic!(
            "ImageMagick did not write an 8-bit binary PPM: {:?}",
            String::from_utf8_lossy(&ppm[..ppm.len().min(64)])
        )
    })
}

/// Compares the centre of each bar with [`BARS`]; returns a description of every mismatch.
fn check_bars(screen: &(usize, usize, Vec<u8>), win: &Win) -> Result<String, String> {
    let (sw, sh, rgb) = screen;
    let mut report = String::new();
    let mut bad = 0;
    for (i, want) in BARS.iter().enumerate() {
        let (x, y) = (win.x + (2 * i + 1) * win.width / 16, win.y + win.height / 3);
        assert!(x < *sw && y < *sh, "bar {i} centre ({x},{y}) is outside the {sw}x{sh} screen");
        let got = &rgb[(y * sw + x) * 3..][..3];
        let ok = (0..3).all(|c| got[c].abs_diff(want[c]) <= TOLERANCE);
        bad += usize::from(!ok);
        report += &format!(
            "  bar {i} at screen ({x},{y}): want {want:?}, got {got:?}{}\n",
            if ok { "" } else { "  <-- MISMATCH" }
        );
    }
    if bad == 0 {
        Ok(report)
    } else {
        Err(report)
    }
}

#[test]
fn demo_window_shows_the_colour_bars() {
    let tools = [("Xvfb", "xvfb"), ("xwd", "x11-apps"), ("xwininfo", "x11-utils"), (imagemagick(), "imagemagick")];
    if !require_tools("demo_window_shows_the_colour_bars", &tools) {
        return;
    }
    let dir = scratch_dir("window-bars");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR is target/tmp");
    let png = target.join("window-test.png");
    let (_xvfb, display) = start_xvfb(&dir.join("xvfb.log"));
    let display = format!(":{display}");

    let started = Instant::now();
    let size = format!("{}x{}", SIZE.0, SIZE.1);
    let mut demo = start_demo(&display, &["--size", &size, "--duration", &DEMO_SECS.to_string()]);

    // The window opens with the first frame; wait for it to be mapped.
    let win = loop {
        if let Some(w) = find_window(&display).filter(|w| w.viewable) {
            break w;
        }
        assert!(demo.is_running(), "framecast demo exited before its window appeared");
        assert!(
            started.elapsed() < SETTLE * 2,
            "no viewable window titled \"framecast...\" on {display} after {:?}",
            SETTLE * 2
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(win.title.starts_with("framecast"), "window title {:?}", win.title);
    assert_eq!((win.width, win.height), SIZE, "the window should open at the frame size: {win:?}");

    // Let a few seconds of frames through, then check; try again a little later before failing,
    // in case the machine is busy (cargo runs other tests at the same time).
    thread::sleep(SETTLE.saturating_sub(started.elapsed()));
    let mut result = Err(String::new());
    for attempt in 0..3 {
        if attempt > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        let screen = screenshot(&display, &dir.join("screen.xwd"), &png);
        result = check_bars(&screen, &win);
        if result.is_ok() {
            break;
        }
    }
    // The title carries live stats once the first report is in; show what it says now.
    let title = find_window(&display).map_or(win.title.clone(), |w| w.title);
    eprintln!(
        "window {} {title:?} at +{}+{} {}x{}; screenshot: {}",
        win.id,
        win.x,
        win.y,
        win.width,
        win.height,
        png.display()
    );
    match &result {
        Ok(report) => eprint!("{report}"),
        Err(report) => panic!("the window does not show the colour bars (see {}):\n{report}", png.display()),
    }

    demo.expect_success(Duration::from_secs(DEMO_SECS + 20));
    let log = demo.stderr();
    assert!(!log.contains("headless"), "framecast demo ran headless instead of opening a window; stderr:\n{log}");
}

/// The window keeps up with a 60 fps stream at 1280x720 and adds less than a frame of delay
/// between decoding and drawing (issue 7; `benches/window.sh` measures the same with more
/// runs). Bounds are loose so that a busy machine passes: 50 of 60 fps, the median
/// decoded→displayed delay under one frame period (16.7 ms: a frame queued behind another
/// would put it there), and its p95 under two (a loaded machine delays a few draws; CI once
/// saw 17.7 ms while other builds ran).
#[test]
fn window_keeps_up_with_60_fps_at_720p() {
    if !require_tools("window_keeps_up_with_60_fps_at_720p", &[("Xvfb", "xvfb")]) {
        return;
    }
    let dir = scratch_dir("window-fps");
    let stats = dir.join("recv.jsonl");
    let (_xvfb, display) = start_xvfb(&dir.join("xvfb.log"));
    let stats_path = stats.to_str().expect("a UTF-8 scratch path");
    let mut demo = start_demo(
        &format!(":{display}"),
        &["--size", "1280x720", "--fps", "60", "--duration", "3", "--recv-stats-json", stats_path],
    );
    demo.expect_success(Duration::from_secs(30));
    let log = demo.stderr();
    assert!(!log.contains("headless"), "framecast demo ran headless instead of opening a window; stderr:\n{log}");

    let summary = records_of(&stats, RecordType::Summary)
        .pop()
        .unwrap_or_else(|| panic!("no summary line in the receiver's stats {}", stats.display()));
    let (shown, seconds) = (summary.displayed.unwrap_or(0) as f64, summary.seconds);
    let fps = if seconds > 0.0 { shown / seconds } else { 0.0 };
    let lat = summary.latency_decoded_displayed_ms;
    eprintln!(
        "{shown} frames shown in {seconds:.2} s = {fps:.1} fps; decoded->displayed {:?}",
        summary.latency_decoded_displayed_ms
    );
    assert!(fps >= 50.0, "{fps:.1} fps shown, expected at least 50 of 60; summary: {summary:?}");
    let lat = lat.unwrap_or_else(|| panic!("no decoded->displayed latency in the summary: {summary:?}"));
    let frame_ms = 1000.0 / 60.0;
    assert!(lat.p50 < frame_ms, "decoded->displayed p50 {:.2} ms, expected under one frame (16.7 ms)", lat.p50);
    assert!(lat.p95 < 2.0 * frame_ms, "decoded->displayed p95 {:.2} ms, expected under two frames (33.3 ms)", lat.p95);
}

/// Quality keys in a real window (issue 4): Up asks the sender for more quality over the
/// reverse channel, Down for less; the sender applies each on its next frame and the window
/// title shows the quality arriving. Key presses go in through xdotool (XTEST), as a
/// keyboard's would.
#[test]
fn window_quality_keys_reach_the_sender() {
    let tools = [("Xvfb", "xvfb"), ("xwininfo", "x11-utils"), ("xdotool", "xdotool")];
    if !require_tools("window_quality_keys_reach_the_sender", &tools) {
        return;
    }
    let dir = scratch_dir("window-keys");
    let (_xvfb, display) = start_xvfb(&dir.join("xvfb.log"));
    let display = format!(":{display}");
    let mut demo = start_demo(&display, &["--size", "640x480", "--quality", "50", "--duration", "12"]);
    let started = Instant::now();
    let win = loop {
        if let Some(w) = find_window(&display).filter(|w| w.viewable) {
            break w;
        }
        assert!(started.elapsed() < SETTLE * 2, "no framecast window on {display}");
        thread::sleep(Duration::from_millis(100));
    };
    let xdotool = |args: &[&str]| {
        let ok = Command::new("xdotool").args(args).env("DISPLAY", &display).status().expect("xdotool");
        assert!(ok.success(), "xdotool {args:?}");
    };
    // Keyboard focus follows the pointer on a bare X server.
    xdotool(&["mousemove", "--window", &win.id, "20", "20"]);
    thread::sleep(Duration::from_millis(500));
    // Held for 150 ms, as a finger would: minifb reads key states at each window update, so
    // a press and release within one update (xdotool's plain `key`) can go unseen.
    for key in ["Up", "Up", "Down"] {
        xdotool(&["keydown", key]);
        thread::sleep(Duration::from_millis(150));
        xdotool(&["keyup", key]);
        thread::sleep(Duration::from_millis(600));
    }
    // The title carries the quality of the frames arriving, refreshed each second.
    thread::sleep(Duration::from_millis(1500));
    let title = find_window(&display).map(|w| w.title).unwrap_or_default();
    demo.expect_success(Duration::from_secs(30));
    let log = demo.stderr();
    for (from, to) in [(50, 55), (55, 60), (60, 55)] {
        let line = format!("viewer asked for a new quality from={from} to={to}");
        assert!(log.contains(&line), "missing {line:?}; stderr:\n{log}");
    }
    assert!(title.contains("q55"), "the title shows the quality arriving: {title:?}");
}
