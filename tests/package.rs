//! The Debian package and its systemd service: an amd64 `.deb` made by cargo-deb from the
//! binary under test (`cargo deb --no-build --profile dev`: the same packaging as
//! `scripts/cross.sh amd64 --deb`, without a release build), its file list, control data and
//! conffile, its binary and config run from a scratch root (`dpkg -x`), and its unit checked
//! by `systemd-analyze verify` (systemd is not PID 1 here: the unit is verified, not started).
//!
//! Needs cargo-deb (`scripts/setup.sh --cross-deps`), dpkg-deb and systemd-analyze
//! (`--test-deps`); under CI a missing tool fails the test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::tools::{require_tools, run_tool, tool_stdout};

const TOOLS: &[(&str, &str)] = &[
    ("cargo-deb", "cargo-deb: scripts/setup.sh --cross-deps"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("systemd-analyze", "systemd"),
];
const UNIT: &str = "framecast.service";
const CONFIG: &str = "/etc/framecast/framecast.toml";

/// The package, built once for all the tests of this file, and a scratch root it is
/// unpacked into. Kept under cargo's scratch directory for integration tests.
struct Built {
    deb: PathBuf,
    root: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // One fixed directory, emptied first: a run leaves at most one package behind.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        let deb = build_deb(&dir);
        let root = dir.join("root");
        tool_stdout(Command::new("dpkg").arg("-x").arg(&deb).arg(&root), Duration::from_secs(60));
        Built { deb, root }
    })
}

/// `cargo deb --no-build` packages the dev binary that cargo built for these tests.
fn build_deb(dir: &Path) -> PathBuf {
    let bin = Path::new(common::BIN);
    // cargo-deb finds the binary at <target dir>/debug/framecast, where cargo put it.
    let target_dir = bin.parent().and_then(Path::parent).expect("target dir");
    let out = run_tool(
        Command::new("cargo")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["deb", "--no-build", "--profile", "dev", "--fast", "--output"])
            .arg(dir),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "cargo deb failed ({}):\n{}", out.status, out.stderr);
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read scratch dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}, found {debs:?}; cargo deb said:\n{}",
        dir.display(),
        out.stderr
    );
    eprintln!(
        "built {} ({} bytes) in {:?}",
        debs[0].display(),
        fs::metadata(&debs[0]).map(|m| m.len()).unwrap_or(0),
        out.took
    );
    debs[0].clone()
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8(tool_stdout(cmd, Duration::from_secs(60))).expect("utf-8 output")
}

/// The unit's path inside the package (cargo-deb puts it under lib/ or usr/lib/).
fn unit_path(root: &Path) -> PathBuf {
    ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join(UNIT))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {UNIT} under {}/(usr/)lib/systemd/system", root.display()))
}

#[test]
fn deb_lists_the_binary_unit_config_and_docs() {
    if !require_tools("deb_lists_the_binary_unit_config_and_docs", TOOLS) {
        return;
    }
    let b = built();
    let list = text(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    for (path, mode) in [
        ("./usr/bin/framecast", "-rwxr-xr-x"),
        ("./etc/framecast/framecast.toml", "-rw-r--r--"),
        ("/systemd/system/framecast.service", "-rw-r--r--"),
        ("./usr/share/doc/framecast/README.md", "-rw-r--r--"),
    ] {
        let line =
            list.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("{path} not in the package:\n{list}"));
        assert!(line.starts_with(mode), "{path}: expected mode {mode}: {line}");
        assert!(line.contains(" root/root ") || line.contains(" 0/0 "), "{path}: expected owner root (0/0): {line}");
    }
    let info = text(Command::new("dpkg-deb").arg("-I").arg(&b.deb));
    let version = format!("Version: {}-1", env!("CARGO_PKG_VERSION"));
    for want in ["Package: framecast", "Architecture: amd64", &version, "Section: video"] {
        assert!(info.lines().any(|l| l.trim() == want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    let depends =
        info.lines().find(|l| l.trim().starts_with("Depends:")).unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(depends.contains("adduser") && depends.contains("libc6"), "{depends}");
    for script in ["conffiles", "postinst", "postrm", "prerm"] {
        assert!(info.contains(script), "control archive lacks {script}:\n{info}");
    }
}

#[test]
fn deb_marks_the_config_as_a_conffile_and_its_scripts_create_the_user() {
    if !require_tools("deb_marks_the_config_as_a_conffile_and_its_scripts_create_the_user", TOOLS) {
        return;
    }
    let b = built();
    let conffiles = text(Command::new("dpkg-deb").arg("-f").arg(&b.deb).arg("Package"));
    assert_eq!(conffiles.trim(), "framecast");
    let control = b.deb.with_extension("control");
    let _ = fs::remove_dir_all(&control);
    tool_stdout(Command::new("dpkg-deb").arg("-e").arg(&b.deb).arg(&control), Duration::from_secs(60));
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONFIG], "conffiles: {conffiles:?}");
    let postinst = fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(postinst.contains("adduser --system --group") && postinst.contains("adduser --quiet framecast video"));
    assert!(!postinst.contains("#DEBHELPER#"), "cargo-deb did not fill in #DEBHELPER#:\n{postinst}");
    // Installed disabled and not started: the user edits the config first.
    assert!(postinst.contains("deb-systemd-helper"), "no systemd fragment in postinst:\n{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "postinst starts the service:\n{postinst}");
    for script in ["postinst", "postrm"] {
        let out = run_tool(Command::new("sh").arg("-n").arg(control.join(script)), Duration::from_secs(10));
        assert!(out.status.success(), "{script} is not valid sh: {}", out.stderr);
    }
}

#[test]
fn installed_binary_runs_and_reads_the_installed_config() {
    if !require_tools("installed_binary_runs_and_reads_the_installed_config", TOOLS) {
        return;
    }
    let b = built();
    let bin = b.root.join("usr/bin/framecast");
    let version = text(Command::new(&bin).arg("--version"));
    assert_eq!(version.trim(), format!("framecast {}", env!("CARGO_PKG_VERSION")));
    let shipped = fs::read_to_string(b.root.join(CONFIG.trim_start_matches('/'))).expect("installed config");
    let source = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/framecast.toml")).unwrap();
    assert_eq!(shipped, source, "the package's config is not packaging/framecast.toml");
    // The service's command line with the shipped config, bounded to a few frames and with
    // HTTP on a loopback port instead of 0.0.0.0:8080 (the command line wins over the file).
    let port = common::free_port();
    let out = run_tool(
        Command::new(&bin).args(["send", "--config"]).arg(b.root.join(CONFIG.trim_start_matches('/'))).args([
            "--frames",
            "5",
            "--http",
            &format!("127.0.0.1:{port}"),
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "framecast send --config (installed) failed ({}):\n{}", out.status, out.stderr);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "HTTP not on the command line's address:\n{}",
        out.stderr
    );
}

/// A root for `systemd-analyze verify --root`: the package unpacked, plus the system's own
/// units (the targets the unit refers to must exist there).
fn verify_root(b: &Built, name: &str, unit_text: Option<&str>) -> (PathBuf, PathBuf) {
    let root = b.root.with_file_name(name);
    let _ = fs::remove_dir_all(&root);
    tool_stdout(Command::new("cp").arg("-a").arg(&b.root).arg(&root), Duration::from_secs(60));
    let unit = unit_path(&root);
    let dir = unit.parent().expect("unit dir").to_path_buf();
    for system in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        if Path::new(system).is_dir() {
            // -n: the package's own unit stays.
            tool_stdout(Command::new("cp").arg("-an").arg(format!("{system}/.")).arg(&dir), Duration::from_secs(60));
        }
    }
    if let Some(t) = unit_text {
        fs::write(&unit, t).expect("write unit");
    }
    (root, unit)
}

fn verify(root: &Path, unit: &Path) -> common::tools::ToolOutput {
    run_tool(
        Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).arg(unit),
        Duration::from_secs(60),
    )
}

#[test]
fn unit_verifies_and_is_hardened() {
    if !require_tools("unit_verifies_and_is_hardened", TOOLS) {
        return;
    }
    let b = built();
    let (root, unit) = verify_root(b, "verify-root", None);
    let out = verify(&root, &unit);
    // A warning (an unknown key, a bad value) still exits 0: any output fails the test too.
    assert!(
        out.status.success() && out.stderr.trim().is_empty(),
        "systemd-analyze verify ({}):\n{}",
        out.status,
        out.stderr
    );
    let text = fs::read_to_string(&unit).unwrap();
    for want in [
        "ExecStart=/usr/bin/framecast send --config /etc/framecast/framecast.toml",
        "User=framecast",
        "SupplementaryGroups=video",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
    ] {
        assert!(text.lines().any(|l| l == want), "{UNIT} lacks the line {want:?}");
    }

    // systemd's own score of the sandbox: 0 (most locked down) to 10; "OK" is below 4.
    let out = run_tool(
        Command::new("systemd-analyze").args([
            "security",
            "--offline=true",
            &format!("--root={}", root.display()),
            UNIT,
        ]),
        Duration::from_secs(60),
    );
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &out.stderr;
    let score: f64 = all
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for framecast.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level from systemd-analyze security:\n{all}"));
    assert!(score <= 2.0, "exposure level {score}, expected at most 2.0:\n{all}");
    eprintln!("systemd-analyze security: exposure level {score}");

    // The check has teeth: the same unit with a misspelt setting, and with a missing binary.
    let bad = text.replace("ProtectHome=yes", "ProtectHome=yess");
    let (root, unit) = verify_root(b, "verify-bad", Some(&bad));
    let out = verify(&root, &unit);
    assert!(!out.stderr.trim().is_empty(), "systemd-analyze verify said nothing about ProtectHome=yess");
    fs::remove_file(root.join("usr/bin/framecast")).unwrap();
    let out = verify(&root, &unit_path(&root));
    assert!(!out.status.success(), "systemd-analyze verify passed without /usr/bin/framecast:\n{}", out.stderr);
}
