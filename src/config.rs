//! `--config PATH` for `send` and `recv`: a TOML file whose keys are the subcommand's long
//! flags (`fps = 15`, `http = "0.0.0.0:8080"`, `fast-dct = true`), read into the command line
//! before clap parses it. Owns reading the file, checking each key and value, and the merge.
//!
//! Rules (also in `packaging/framecast.toml` and the README):
//! - A key is a long flag's name without `--`; `-` and `_` are the same (`target-kbps` or
//!   `target_kbps`), and giving both spellings is an error.
//! - A flag that takes a value takes a TOML string, integer or float (`fps = 15` and
//!   `fps = "15"` are the same); an on/off flag (`--once`) takes `true` or `false`.
//! - The command line wins: a flag given there replaces the file's key, whatever the order.
//!   An on/off flag set to `true` in the file cannot be turned off from the command line.
//! - `config` itself, `help` and `version` are not keys.
//!
//! How: the command line is parsed once on its own; every file key whose flag the command
//! line did not set (`ArgMatches::value_source`) becomes one `--flag=value` argument placed
//! before the command line's own, and the result is parsed again. So clap's defaults never
//! override the file, and the file's values go through the same parsers and checks as flags.
//! Each value is first parsed alone, so that a bad one is reported against its line.
//!
//! Errors are one line: the file, the line, the key, what was expected and what arrived.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The subcommands that take `--config`.
pub const SUBCOMMANDS: [&str; 2] = ["send", "recv"];

/// Why a config file was not used. Every message names the file, and all but `Read` the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: not valid TOML: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("{path}:{line}: unknown key `{key}`: expected a long flag of `framecast {cmd}` without `--` (see `framecast {cmd} --help`)")]
    UnknownKey { path: String, line: usize, key: String, cmd: String },
    #[error("{path}:{line}: key `{key}`: expected {expected}, got {got}")]
    Type { path: String, line: usize, key: String, expected: String, got: String },
    #[error("{path}:{line}: key `{key}`: bad value {got}: {reason}")]
    Value { path: String, line: usize, key: String, got: String, reason: String },
    #[error("{path}:{line}: key `{key}` sets --{flag}, as `{other}` on line {other_line} does: keep one")]
    Duplicate { path: String, line: usize, key: String, flag: String, other: String, other_line: usize },
    #[error("{path}: {message} (a key in the file, or the file with the command line)")]
    Combined { path: String, message: String },
}

/// A failed parse: clap's own error (help, version and usage errors: `exit()` prints it and
/// exits as clap does) or a config file error (exit status 2).
#[derive(Debug)]
pub enum ArgsError {
    Clap(clap::Error),
    Config(ConfigError),
}

impl From<clap::Error> for ArgsError {
    fn from(e: clap::Error) -> Self {
        ArgsError::Clap(e)
    }
}

impl From<ConfigError> for ArgsError {
    fn from(e: ConfigError) -> Self {
        ArgsError::Config(e)
    }
}

/// Parses the command line, with the `--config` file of `send` or `recv` read into it.
pub fn parse_args<I, T>(args: I) -> Result<Cli, ArgsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = Cli::command().try_get_matches_from(&args)?;
    let Some((cmd, sub)) = matches.subcommand().filter(|(name, _)| SUBCOMMANDS.contains(name)) else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(path) = sub.get_one::<PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let from_file = file_args(cmd, path, sub)?;
    // The subcommand is the first argument that is not an option (Cli has no global options).
    let at = args.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map_or(args.len(), |i| i + 2);
    let mut merged = args[..at].to_vec();
    merged.extend(from_file.into_iter().map(OsString::from));
    merged.extend_from_slice(&args[at..]);
    let merged = Cli::command()
        .try_get_matches_from(&merged)
        .map_err(|e| ConfigError::Combined { path: path.display().to_string(), message: clap_reason(&e) })?;
    Ok(Cli::from_arg_matches(&merged)?)
}

/// The file's keys for subcommand `cmd` as `--flag=value` arguments, leaving out the flags
/// that `given` (the command line's matches) set.
pub fn file_args(cmd: &str, path: &Path, given: &ArgMatches) -> Result<Vec<String>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let keys = parse_toml(&text, &shown)?;
    let command = Cli::command();
    let sub = command.find_subcommand(cmd).expect("send and recv exist");
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut in_order: Vec<_> = keys.iter().collect();
    in_order.sort_by_key(|(_, v)| v.span().start);
    for (key, value) in in_order {
        let line = line_at(&text, value.span().start);
        let flag = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && !matches!(flag.as_str(), "config" | "help" | "version"))
            .ok_or_else(|| ConfigError::UnknownKey {
                path: shown.clone(),
                line,
                key: key.clone(),
                cmd: cmd.to_string(),
            })?;
        // Keys come in file order, so `other` is the earlier one.
        if let Some((other, other_line)) = seen.insert(flag.clone(), (key.clone(), line)) {
            return Err(ConfigError::Duplicate { path: shown, line, key: key.clone(), flag, other, other_line });
        }
        let err = |expected: &str| ConfigError::Type {
            path: shown.clone(),
            line,
            key: key.clone(),
            expected: expected.to_string(),
            got: describe(value.get_ref()),
        };
        let token = match (arg.get_action(), value.get_ref()) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => Some(format!("--{flag}")),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => None,
            (ArgAction::SetTrue, _) => return Err(err("true or false (an on/off flag)")),
            (_, toml::Value::String(s)) => Some(format!("--{flag}={s}")),
            (_, toml::Value::Integer(n)) => Some(format!("--{flag}={n}")),
            (_, toml::Value::Float(x)) => Some(format!("--{flag}={x}")),
            (_, _) => return Err(err(&format!("a string or a number (the value of --{flag})"))),
        };
        let Some(token) = token else { continue };
        check_value(cmd, &token).map_err(|reason| ConfigError::Value {
            path: shown.clone(),
            line,
            key: key.clone(),
            got: describe(value.get_ref()),
            reason,
        })?;
        if given.value_source(arg.get_id().as_str()) != Some(ValueSource::CommandLine) {
            out.push(token);
        }
    }
    Ok(out)
}

/// The file's top-level keys with their values and where each value is in the file.
type Keys = BTreeMap<String, toml::Spanned<toml::Value>>;

fn parse_toml(text: &str, path: &str) -> Result<Keys, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_string(),
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        message: e.message().trim().to_string(),
    })
}

/// 1-based line number of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// A TOML value as the user wrote it, with its type: `"abc" (a string)`, `true (a boolean)`.
fn describe(v: &toml::Value) -> String {
    let kind = match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    };
    let mut shown = v.to_string();
    if shown.len() > 60 {
        let cut = (0..=60).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    format!("{shown} ({kind})")
}

/// Parses one `--flag=value` alone through clap, so that a bad value is blamed on its key.
/// Only value errors count here: conflicts and requirements between keys are left to the
/// whole parse.
fn check_value(cmd: &str, token: &str) -> Result<(), String> {
    match Cli::command().try_get_matches_from(["framecast", cmd, token]) {
        Err(e) if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8) => {
            Err(clap_reason(&e))
        }
        _ => Ok(()),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cmd;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("framecast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn send(args: &[&str]) -> Result<crate::cli::SendArgs, ArgsError> {
        let argv = ["framecast", "send"].iter().chain(args).copied();
        match parse_args(argv)?.cmd {
            Cmd::Send(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn config_err(res: Result<crate::cli::SendArgs, ArgsError>) -> String {
        match res {
            Err(ArgsError::Config(e)) => e.to_string(),
            Err(ArgsError::Clap(e)) => panic!("clap error instead of a config error: {e}"),
            Ok(a) => panic!("parsed: {a:?}"),
        }
    }

    #[test]
    fn command_line_overrides_the_file_and_the_file_overrides_defaults() {
        let p = write("order.toml", "fps = 10\nquality = 40\nhttp = \"127.0.0.1:8080\"\n");
        let p = p.to_str().unwrap();
        let a = send(&["--config", p]).unwrap();
        assert_eq!((a.source.fps, a.source.quality), (10, Some(40)));
        assert_eq!(a.http, Some("127.0.0.1:8080".parse().unwrap()));
        // Before or after --config, the command line wins.
        let a = send(&["--fps", "20", "--config", p]).unwrap();
        assert_eq!((a.source.fps, a.source.quality), (20, Some(40)));
        let a = send(&["--config", p, "--quality=90"]).unwrap();
        assert_eq!((a.source.fps, a.source.quality), (10, Some(90)));
        // A flag given as clap's default on the command line still wins over the file.
        let a = send(&["--config", p, "--fps", "30"]).unwrap();
        assert_eq!(a.source.fps, 30);
        // No file: clap's default.
        assert_eq!(send(&[]).unwrap().source.fps, 30);
    }

    #[test]
    fn dashes_and_underscores_both_name_a_flag_but_not_twice() {
        let p = write("spell.toml", "target_kbps = 800\nmax-latency-ms = 300\nfast_dct = true\nonce = false\n");
        let a = send(&["--config", p.to_str().unwrap()]).unwrap();
        assert_eq!((a.link.target_kbps, a.link.max_latency_ms), (Some(800), Some(300)));
        assert!(a.source.fast_dct && !a.once);
        let p = write("twice.toml", "fps = 5\ntarget_kbps = 800\n\ntarget-kbps = 900\n");
        let e = config_err(send(&["--config", p.to_str().unwrap()]));
        assert!(
            e.ends_with(
                "twice.toml:4: key `target-kbps` sets --target-kbps, as `target_kbps` on line 2 does: keep one"
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_the_key_and_its_line() {
        let p = write("unknown.toml", "# comment\nfps = 5\nframerate = 5\n");
        let e = config_err(send(&["--config", p.to_str().unwrap()]));
        assert!(e.contains("unknown.toml:3: unknown key `framerate`: expected a long flag of `framecast send`"), "{e}");
        // recv's flags are not send's.
        let p = write("recvkey.toml", "headless = true\n");
        let e = config_err(send(&["--config", p.to_str().unwrap()]));
        assert!(e.contains("recvkey.toml:1: unknown key `headless`"), "{e}");
        for key in ["config", "help", "version"] {
            let p = write("meta.toml", &format!("{key} = \"x\"\n"));
            let e = config_err(send(&["--config", p.to_str().unwrap()]));
            assert!(e.contains(&format!("unknown key `{key}`")), "{e}");
        }
    }

    #[test]
    fn wrong_types_say_what_was_expected_and_what_arrived() {
        let cases = [
            ("fps = true\n", "key `fps`: expected a string or a number (the value of --fps), got true (a boolean)"),
            ("once = \"yes\"\n", "key `once`: expected true or false (an on/off flag), got \"yes\" (a string)"),
            (
                "\n\nhttp = [1, 2]\n",
                ":3: key `http`: expected a string or a number (the value of --http), got [1, 2] (an array)",
            ),
            ("[source]\nfps = 3\n", ":1: key `source`: expected a string or a number"),
        ];
        for (text, want) in cases {
            let p = write("type.toml", text);
            let e = config_err(send(&["--config", p.to_str().unwrap()]));
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_values_are_blamed_on_their_key_and_line() {
        let cases = [
            ("fps = 5\nquality = 200\n", ":2: key `quality`: bad value 200 (an integer): invalid value '200' for '--quality <1-100>': 200 is not in 1..=100"),
            ("fps = -3\n", ":1: key `fps`: bad value -3 (an integer): invalid value '-3' for '--fps <FPS>'"),
            ("listen = \"nowhere\"\n", ":1: key `listen`: bad value \"nowhere\" (a string): invalid value 'nowhere' for '--listen <ADDR:PORT>'"),
            ("subsampling = \"411\"\n", ":1: key `subsampling`: bad value \"411\" (a string): invalid value '411' for '--subsampling <SUBSAMPLING>'"),
        ];
        for (text, want) in cases {
            let p = write("value.toml", text);
            let e = config_err(send(&["--config", p.to_str().unwrap()]));
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn not_toml_and_unreadable_files_are_errors_with_the_file() {
        let p = write("syntax.toml", "fps = 5\nquality = \n");
        let e = config_err(send(&["--config", p.to_str().unwrap()]));
        assert!(e.contains("syntax.toml:2: not valid TOML:"), "{e}");
        let p = write("dup.toml", "fps = 5\nfps = 6\n");
        let e = config_err(send(&["--config", p.to_str().unwrap()]));
        assert!(e.contains("dup.toml:2: not valid TOML:"), "{e}");
        let e = config_err(send(&["--config", "/nonexistent/framecast.toml"]));
        assert!(e.starts_with("/nonexistent/framecast.toml: cannot read the config file:"), "{e}");
    }

    #[test]
    fn conflicts_between_the_file_and_the_command_line_name_the_file() {
        let p = write("conflict.toml", "listen = \"127.0.0.1:9000\"\n");
        let e = config_err(send(&["--config", p.to_str().unwrap(), "--connect", "127.0.0.1:1"]));
        assert!(e.contains("conflict.toml: ") && e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn recv_reads_its_own_flags() {
        let p = write("recv.toml", "headless = true\nonce = true\ndump-every = 5\ndump-dir = \"/tmp/x\"\n");
        let cli = parse_args(["framecast", "recv", "--config", p.to_str().unwrap()]).unwrap();
        let Cmd::Recv(a) = cli.cmd else { panic!("not recv") };
        assert!(a.headless && a.once);
        assert_eq!(a.dump_every, 5);
    }

    #[test]
    fn every_send_flag_is_documented_in_the_example_config_which_parses() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/framecast.toml");
        let text = std::fs::read_to_string(example).unwrap();
        let a = send(&["--config", example]).unwrap();
        assert!(a.http.is_some(), "the example serves HTTP");
        let command = Cli::command();
        let sub = command.find_subcommand("send").unwrap();
        for arg in sub.get_arguments() {
            // Hidden flags (test and bench switches) are keys too, but not documented.
            let Some(long) = arg.get_long().filter(|l| !matches!(*l, "config" | "help" | "version")) else { continue };
            if arg.is_hide_set() {
                continue;
            }
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{long} =")) || l.starts_with(&format!("{} =", long.replace('-', "_")))
            });
            assert!(documented, "packaging/framecast.toml does not document `{long}`");
        }
        // Each commented-out example, uncommented alone, is a valid setting.
        let mut tried = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("# ")) {
            let Some((key, _)) = line.split_once(" = ") else { continue };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '_') {
                continue;
            }
            let p = write("example-line.toml", &format!("{line}\n"));
            if let Err(ArgsError::Config(e)) = send(&["--config", p.to_str().unwrap()]) {
                panic!("packaging/framecast.toml: `{line}` uncommented: {e}");
            }
            tried += 1;
        }
        assert!(tried >= 20, "only {tried} commented examples found");
    }
}
