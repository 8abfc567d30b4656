//! VLC for the RTSP tests. VLC refuses to run as root, so when the tests run as root (a CI
//! container) it runs as an unprivileged user this module creates once (`framecast-vlc`,
//! with `useradd`). When that cannot be done, or VLC lacks its RTSP client (the live555
//! module) for an RTSP test, the test is skipped, and fails under `CI=true`. Debian 12's VLC
//! has no live555, so the RTSP test is `#[ignore]`d there and VLC is tested on HTTP MJPEG.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::tools::{in_ci, require_tools, run_tool, skip, ToolOutput};

/// The user VLC runs as when the tests run as root.
pub const USER: &str = "framecast-vlc";

/// The user to run VLC as: `None` when the tests do not run as root; `Err` when they do and
/// no unprivileged user can be made.
fn vlc_user() -> &'static Result<Option<String>, String> {
    static USER_ONCE: OnceLock<Result<Option<String>, String>> = OnceLock::new();
    USER_ONCE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let exists = Command::new("id").arg(USER).output().is_ok_and(|o| o.status.success());
        if !exists {
            let out = run_tool(
                Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER]),
                Duration::from_secs(20),
            );
            if !out.status.success() {
                return Err(format!("useradd {USER} failed: {}", out.stderr.trim()));
            }
        }
        Ok(Some(USER.to_string()))
    })
}

/// Whether VLC can run here; skips the test (fails under CI) when it cannot.
pub fn available(test: &str) -> bool {
    if !require_tools(test, &[("cvlc", "vlc"), ("runuser", "util-linux")]) {
        return false;
    }
    match vlc_user() {
        Ok(_) => true,
        Err(why) if in_ci() => panic!("{test}: VLC cannot run: {why}"),
        Err(why) => {
            skip(test, &format!("VLC cannot run: {why}"));
            false
        }
    }
}

/// Whether VLC can play RTSP here (it runs, and has its live555 module); skips the test (fails
/// under CI) when it cannot.
pub fn plays_rtsp(test: &str) -> bool {
    if !available(test) {
        return false;
    }
    if !has_live555() {
        let why = "VLC has no live555 module (liblive555_plugin.so), so it cannot play RTSP: Debian 12's VLC is \
                   built without it, and the satip module that then takes rtsp:// URLs speaks only SAT>IP \
                   (MPEG-TS). Install a VLC with live555 (e.g. Debian 11's or upstream's)";
        if in_ci() {
            panic!("{test}: {why}");
        }
        skip(test, why);
        return false;
    }
    true
}

/// Whether VLC's RTSP client (the live555 module) is installed.
fn has_live555() -> bool {
    let roots =
        ["/usr/lib/x86_64-linux-gnu/vlc/plugins", "/usr/lib/aarch64-linux-gnu/vlc/plugins", "/usr/lib/vlc/plugins"];
    roots
        .iter()
        .any(|r| ["demux", "access"].iter().any(|d| Path::new(r).join(d).join("liblive555_plugin.so").is_file()))
}

/// Plays `url` headless for `seconds`, writing every `ratio`-th frame as a PNG into `dir`
/// (VLC's scene filter). `dir` is made writable for VLC's user.
pub fn play_to_pngs(url: &str, dir: &Path, seconds: u32, extra: &[&str]) -> ToolOutput {
    let user = vlc_user().as_ref().expect("vlc::available was checked").clone();
    if user.is_some() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod scene dir");
    }
    let mut args: Vec<String> = vec![
        "cvlc".into(),
        "--intf=dummy".into(),
        "--no-audio".into(),
        "--vout=dummy".into(),
        "--video-filter=scene".into(),
        format!("--scene-path={}", dir.display()),
        "--scene-format=png".into(),
        "--scene-ratio=5".into(),
        "--scene-prefix=f".into(),
        format!("--run-time={seconds}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    args.push("vlc://quit".into());
    // VLC's --run-time and --stop-time do not end a live HTTP MJPEG stream (it has no
    // timestamps to count), so `timeout` ends VLC with SIGTERM after `seconds`.
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=TERM", "--kill-after=5", &seconds.to_string()]);
    if let Some(u) = &user {
        cmd.args(["runuser", "-u", u, "--"]);
    }
    cmd.args(&args);
    run_tool(&mut cmd, Duration::from_secs(u64::from(seconds) + 30))
}

/// Plays `url` for `seconds` and returns the last frame VLC wrote, as RGB of `size`. VLC's
/// scene filter writes the decoded picture with its rows padded to whole MCU rows (320x256 for
/// 320x240): the padding is cut off. Panics if VLC wrote fewer than 3 frames or another size.
pub fn last_frame_rgb(url: &str, dir: &Path, seconds: u32, size: (usize, usize)) -> Vec<u8> {
    let out = play_to_pngs(url, dir, seconds, &[]);
    let mut pngs: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    pngs.retain(|p| p.extension().is_some_and(|e| e == "png"));
    pngs.sort();
    assert!(pngs.len() >= 3, "VLC wrote {} frames in {seconds} s; its stderr:\n{}", pngs.len(), out.stderr);
    let png = pngs.last().unwrap();
    let rgb = run_tool(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(png)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
        Duration::from_secs(30),
    )
    .stdout;
    let (w, h) = size;
    let rows = rgb.len() / (w * 3);
    let ok = rgb.len() % (w * 3) == 0 && (h..=h + 16).contains(&rows);
    assert!(ok, "VLC's frame {} is not {w}x{h}: {} bytes", png.display(), rgb.len());
    rgb[..w * h * 3].to_vec()
}
